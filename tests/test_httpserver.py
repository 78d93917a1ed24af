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
from tests.helpers import AgentProcess, eventually
from tests.mirror_fixture import free_port


class Recorder:
    """A logger that keeps what it is told (event name and keys)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **keys: Any) -> None:
        self.lines.append((event, keys))


async def _hello(_request: web.Request) -> web.Response:
    return web.Response(text="hello\n")


async def _echo(request: web.Request) -> web.Response:
    form = await request.post()
    return web.Response(text=f"got {form.get('a', '')}\n")


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Recorder]]:
    app = web.Application()
    app.router.add_get("/", _hello)
    app.router.add_post("/form", _echo)
    port, log = free_port(), Recorder()
    limits = ServerLimits(max_connections=5, header_timeout_s=0.5, keepalive_timeout_s=2, body_timeout_s=0.5)
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


async def test_clients_that_drip_their_request_bodies_get_408_and_others_are_served(server):
    """Red-team finding: 512 POSTs sending one body byte per 5 s held every connection of
    the console. Each has ``body_timeout_s`` for its body, then 408 and a closed connection."""
    port, log = server
    slow = []
    for _ in range(5):  # every place taken by a client whose head is whole, its body not
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1000\r\n\r\na"
        )
        slow.append((reader, writer))
    for reader, _ in slow:
        answer = await asyncio.wait_for(reader.read(), timeout=30)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    timeouts = [k for e, k in log.lines if e == "http_body_timeout"]
    assert len(timeouts) == 5 and all(k["path"] == "/form" and k["method"] == "POST" for k in timeouts)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{port}/form", data={"a": "b"}) as resp:
            assert resp.status == 200 and await resp.text() == "got b\n"
        async with http.get(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 200
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


async def test_a_bad_request_to_an_agent_logs_json_lines_only(test_dsn, tmp_path):
    """The DataStore agent answers a malformed request 400; what aiohttp logs about it is a
    JSON line like every other (no bare traceback in the agent's output)."""
    port = free_port()
    server = AgentProcess("dist_server", test_dsn, tmp_path, ds_port=port)
    try:
        await eventually(lambda: server.events("ds_listening"), timeout_s=60, what="the DataStore listening")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ds/index.txt HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), timeout=30)
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer[:80]
        writer.close()
        logged = await eventually(
            lambda: [e for e in server.events() if str(e.get("event", "")).startswith("Error handling")],
            timeout_s=30,
            what="aiohttp's error line",
        )
    finally:
        server.kill()
    assert "Traceback" in logged[0]["exception"] and logged[0]["logger"] == "aiohttp.server"
    text = [line for line in server.output().splitlines() if line.strip()]
    assert len(text) == len(server.events()), [t for t in text if not t.startswith("{")][:5]
