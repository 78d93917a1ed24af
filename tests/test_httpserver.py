"""The guarded HTTP server every agent listens through: slow or too many clients cannot
starve the others (real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from shared.runtime.httpserver import ServerLimits, serving
from tests.mirror_fixture import free_port


class Recorder:
    """A logger that keeps what it is told (event name and keys)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **keys: Any) -> None:
        self.lines.append((event, keys))


async def _hello(_request: web.Request) -> web.Response:
    return web.Response(text="hello\n")


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Recorder]]:
    app = web.Application()
    app.router.add_get("/", _hello)
    port, log = free_port(), Recorder()
    limits = ServerLimits(max_connections=5, header_timeout_s=0.5, keepalive_timeout_s=2)
    async with serving(app, "127.0.0.1", port, limits, log, "test"):
        yield port, log


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection (within a bounded wait)."""
    try:
        return await asyncio.wait_for(reader.read(1), timeout=10) == b""
    except (ConnectionResetError, TimeoutError):
        return True


async def test_connections_over_the_cap_are_refused_with_one_line_each(server):
    port, log = server
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
    extra = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    assert all([await _closed(r) for r, _ in extra])
    refused = [
        k for e, k in log.lines if e == "http_client_refused" and k["reason"] == "too many connections"
    ]
    assert len(refused) == 3 and all(k["client"].startswith("127.0.0.1:") for k in refused)
    for _, writer in held + extra:
        writer.close()


async def test_clients_that_never_finish_their_headers_are_closed_and_others_served(server):
    port, log = server
    slow = []
    for _ in range(5):  # every place taken by a client that sends half a request head
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        slow.append((reader, writer))
    assert all([await _closed(r) for r, _ in slow])
    assert sum(1 for e, k in log.lines if k.get("reason") == "no complete request head in time") == 5
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as resp:
        assert resp.status == 200 and await resp.text() == "hello\n"
    for _, writer in slow:
        writer.close()


async def test_a_client_that_sends_its_head_in_time_is_served_on_a_kept_connection(server):
    port, _log = server
    async with aiohttp.ClientSession() as http:
        for _ in range(3):  # one connection, several requests
            async with http.get(f"http://127.0.0.1:{port}/") as resp:
                assert resp.status == 200


async def test_the_datastore_wants_its_token_when_one_is_set(db):
    from shared.distribution import server as dsserver

    port = free_port()
    async with (
        serving(dsserver.make_app(db, "s3cret"), "127.0.0.1", port, ServerLimits(), Recorder(), "datastore"),
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{port}/ds/index.txt"
        async with http.get(url) as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        async with http.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with http.get(url, headers={"Authorization": "Bearer s3cret"}) as resp:
            assert resp.status == 200 and (await resp.text()).startswith("# productID")
