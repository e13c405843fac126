"""The error middleware's last resort: an unexpected exception is a logged JSON 500."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web

from server.http.middleware import error_middleware


async def test_unexpected_exception_is_json_500(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise ZeroDivisionError("secret internals")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    resp = await client.get("/broken")
    assert resp.status == 500
    body = await resp.json()
    assert body == {"error": "internal", "detail": "internal server error"}
    assert "ZeroDivisionError" in caplog.text  # logged with its traceback
    assert "secret internals" not in await resp.text()


async def test_a_client_gone_before_its_body_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Headers promise a body, the connection closes first: one debug line, no traceback.

    Served as ``kiosk server run`` serves (an AppRunner without handler cancellation; the
    test client's server cancels the handler instead)."""
    seen: list[BaseException] = []

    async def reads(request: web.Request) -> web.Response:
        try:
            await request.read()
        except BaseException as exc:
            seen.append(exc)
            raise
        return web.Response(text="read")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/body", reads)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"tap')
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.transport.abort()
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
    finally:
        await runner.cleanup()
    assert [type(e) for e in seen] == [ConnectionResetError]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
