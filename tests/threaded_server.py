"""A real server app on a loopback port, run by an event loop in a second thread, for tests
whose client is blocking code (the CLI's urllib clients)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiohttp import web


@contextmanager
def served_in_thread(make_app: Callable[[], web.Application]) -> Iterator[str]:
    """The app ``make_app`` builds, served until the block ends; yields its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))

    async def start() -> web.AppRunner:
        runner = web.AppRunner(make_app())
        await runner.setup()
        await web.SockSite(runner, sock).start()
        return runner

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
