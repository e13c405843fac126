"""A TCP proxy in front of the real server that misbehaves on request (real sockets only).

Modes: `pass` (pipe to the server), `stopped` (nothing listens: connection refused),
`blackhole` (accept, read, never answer), `http500` (answer every request with a 500),
`trickle` (pipe the server's answer one byte at a time). Switching mode drops every open
connection so the kiosk's connection pool cannot hide the change.
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, trickle_s: float = 0.05) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.trickle_s = trickle_s
        self.mode = "pass"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def set_mode(self, mode: str) -> None:
        assert mode in ("pass", "stopped", "blackhole", "http500", "trickle"), mode
        self._drop_connections()
        if mode == "stopped" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif mode != "stopped" and self._server is None:
            await self.start()
        self.mode = mode

    def _drop_connections(self) -> None:
        for writer in list(self._conns):
            writer.transport.abort()
        self._conns.clear()
        for task in list(self._tasks):
            task.cancel()

    async def close(self) -> None:
        self._drop_connections()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            if self.mode == "blackhole":
                while await reader.read(65536):
                    pass
            elif self.mode == "http500":
                while await _read_request(reader):
                    body = b'{"error": "internal", "detail": "injected"}'
                    writer.write(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                        + b"Content-Length: %d\r\n\r\n" % len(body)
                        + body
                    )
                    await writer.drain()
            else:
                await self._pipe(reader, writer, slow=self.mode == "trickle")
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, slow: bool
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def client_to_server() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        async def server_to_client() -> None:
            while data := await up_reader.read(65536):
                if slow:
                    for i in range(len(data)):
                        writer.write(data[i : i + 1])
                        await writer.drain()
                        await asyncio.sleep(self.trickle_s)
                else:
                    writer.write(data)
                    await writer.drain()

        try:
            await asyncio.gather(client_to_server(), server_to_client())
        finally:
            up_writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> bool:
    """Consume one HTTP/1.1 request (headers + Content-Length body); False at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            with contextlib.suppress(ValueError):
                length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return True
