"""The error middleware's last resort: an unexpected exception is a logged JSON 500."""

from __future__ import annotations

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
