"""A MySQL-protocol proxy on 127.0.0.1 that can lose the reply to a COMMIT.

It forwards bytes both ways between its clients and the test server (TCP or Unix socket).
It reads the client's side packet by packet (3-byte length, 1-byte sequence, payload); once
armed, the next ``COM_QUERY "COMMIT"`` goes to the server, the server's reply is read and
thrown away, and both connections are closed: the transaction committed, and the client
cannot know it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from shared.core.settings import Dsn

COM_QUERY = 0x03


@dataclass
class _Pair:
    drop_reply: asyncio.Event = field(default_factory=asyncio.Event)


class LossyProxy:
    def __init__(self, upstream: Dsn) -> None:
        self.upstream = upstream
        self.armed = False
        self.dropped = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def lose_next_commit_reply(self) -> None:
        self.armed = True

    def dsn(self) -> Dsn:
        """The upstream DSN, reached through this proxy."""
        return Dsn(self.upstream.user, self.upstream.password, "127.0.0.1", self.port, self.upstream.database)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.upstream.unix_socket:
            return await asyncio.open_unix_connection(self.upstream.unix_socket)
        return await asyncio.open_connection(self.upstream.host, self.upstream.port)

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await self._open_upstream()
        pair = _Pair()
        pumps = [
            asyncio.create_task(self._client_to_server(c_reader, s_writer, pair)),
            asyncio.create_task(self._server_to_client(s_reader, c_writer, pair)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (c_writer, s_writer):
                writer.close()

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                header = await reader.readexactly(4)
                payload = await reader.readexactly(int.from_bytes(header[:3], "little"))
                if (
                    self.armed
                    and payload[:1] == bytes([COM_QUERY])
                    and payload[1:].strip().upper() == b"COMMIT"
                ):
                    self.armed = False
                    pair.drop_reply.set()
                writer.write(header + payload)
                await writer.drain()

    async def _server_to_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                if pair.drop_reply.is_set():
                    self.dropped += 1  # the COMMIT's reply: thrown away, then hang up
                    return
                writer.write(data)
                await writer.drain()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)


@contextlib.asynccontextmanager
async def lossy_proxy(upstream: Dsn) -> AsyncIterator[LossyProxy]:
    proxy = LossyProxy(upstream)
    server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        for task in list(proxy._tasks):
            task.cancel()
        await asyncio.gather(*proxy._tasks, return_exceptions=True)
        await server.wait_closed()
