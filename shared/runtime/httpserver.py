"""Serving an aiohttp application so that no client can take the server down.

Every HTTP server of the project (the DataStore of dist_server, the metrics status page, the
PSPS stand-in) listens through :func:`serving`: at most ``max_connections`` connections at
once (one more is closed at once, with one log line naming the client); a connection must
send its first request head within ``header_timeout_s`` (a slow-header client is closed) and
then its body within ``body_timeout_s`` (a slow-body client gets 408 and is closed); an idle
keep-alive connection is closed after ``keepalive_timeout_s``. The descriptor budget of
the process is raised to its hard limit at start, and the deployment files raise the hard
limit (``LimitNOFILE`` in the systemd unit, ``minfds`` in supervisord.conf).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psutil
from aiohttp import web

from shared.core.errors import PortInUse
from shared.core.settings import Settings


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """No framing, no outside scripts or styles, no referrer, no sniffing, no caching: for
    every page a browser may show (the console, the status page)."""
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def port_holder(port: int) -> str:
    """Who listens on TCP ``port`` on this host, for an error message ("pid 123 (ipp-agent
    dist_server)"), as far as this user may see."""
    try:
        listeners = [
            c
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        ]
    except (psutil.Error, OSError):
        return "another process (not visible to this user)"
    for conn in listeners:
        if conn.pid is None:
            continue
        try:
            proc = psutil.Process(conn.pid)
            command = " ".join(proc.cmdline()[:4]) or proc.name()
        except psutil.Error:
            command = "?"
        return f"pid {conn.pid} ({' '.join(command.split())[:120]})"
    return "another process (not visible to this user)" if listeners else "nobody listening now"


def _cannot_listen(exc: OSError, name: str, host: str, port: int) -> PortInUse:
    if exc.errno == errno.EADDRINUSE:
        return PortInUse(
            f"the {name} server cannot listen on {host}:{port}: the port is taken by {port_holder(port)}"
        )
    return PortInUse(f"the {name} server cannot listen on {host}:{port}: {exc.strerror or exc}")


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int = 512
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 15.0
    body_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerLimits:
        return cls(
            settings.http_max_connections,
            settings.http_header_timeout_s,
            settings.http_keepalive_timeout_s,
            settings.http_body_timeout_s,
        )


def body_deadline(limits: ServerLimits, log: Any, name: str) -> Any:
    """A middleware that reads a request's body within ``body_timeout_s`` before its handler
    runs (the handler then finds it read): a client that drips its body one byte at a time
    holds its connection no longer than that, then gets 408 and is closed."""

    @web.middleware
    async def read_body_in_time(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.body_exists:
            try:
                async with asyncio.timeout(limits.body_timeout_s):
                    await request.read()
            except TimeoutError:
                log.warning(
                    "http_body_timeout",
                    server=name,
                    client=request.remote or "?",
                    method=request.method,
                    path=request.path[:200],
                    timeout_s=limits.body_timeout_s,
                )
                response = web.Response(status=408, text="request body not received in time\n")
                response.force_close()
                return response
        return await handler(request)

    return read_body_in_time


class _Connections:
    """The connections of one listening server, counted."""

    def __init__(self, limits: ServerLimits, log: Any, name: str) -> None:
        self.limits, self.log, self.name = limits, log, name
        self.open = 0


class _Guard(asyncio.Protocol):
    """A connection handed on to aiohttp's handler, unless too many are open; closed if
    its first request head does not arrive in time."""

    def __init__(self, handler: asyncio.Protocol, conns: _Connections) -> None:
        self._handler, self._conns = handler, conns
        self._counted = False
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        conns = self._conns
        if conns.open >= conns.limits.max_connections:
            conns.log.warning(
                "http_client_refused",
                server=conns.name,
                client=_peer(transport),
                reason="too many connections",
                open=conns.open,
            )
            transport.abort()
            return
        conns.open += 1
        self._counted = True
        self._timer = asyncio.get_running_loop().call_later(conns.limits.header_timeout_s, self._too_slow)
        self._handler.connection_made(transport)

    def _too_slow(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._conns.log.warning(
                "http_client_refused",
                server=self._conns.name,
                client=_peer(self._transport),
                reason="no complete request head in time",
            )
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._timer.cancel()
                self._timer = None
            self._tail = seen[-3:]
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._counted:
            self._conns.open -= 1
            self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


def raise_descriptor_limit() -> int:
    """Raise the soft limit of open files to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    return soft


@asynccontextmanager
async def serving(
    app: web.Application, host: str, port: int, limits: ServerLimits, log: Any, name: str
) -> AsyncIterator[asyncio.Server]:
    """Listen on host:port with ``app`` for as long as the context lasts."""
    raise_descriptor_limit()
    app.middlewares.append(body_deadline(limits, log, name))
    runner = web.AppRunner(
        app, access_log=None, keepalive_timeout=limits.keepalive_timeout_s, handle_signals=False
    )
    await runner.setup()
    try:
        conns = _Connections(limits, log, name)
        try:
            server = await asyncio.get_running_loop().create_server(
                lambda: _Guard(runner.server(), conns),  # type: ignore[misc]
                host,
                port,
                reuse_address=True,
                backlog=min(1024, limits.max_connections),
            )
        except OSError as exc:
            raise _cannot_listen(exc, name, host, port) from None
        try:
            yield server
        finally:
            server.close()
    finally:
        await runner.cleanup()
