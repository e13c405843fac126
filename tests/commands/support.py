"""Helpers of the command channel tests: the app with the channel, guards, a fake kiosk."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from core.commands import SignedCommand, refusal
from server import app as server_app
from server.app import create_app
from server.commands import OPERATIONS, commands_ctx, install
from server.commands.device_socket import PATH as SOCKET_PATH
from server.config import ServerConfig
from server.events import EVENTS
from server.events.bus import Event, Subscription
from server.offline.keys import server_public_key
from server.storage.db import connect
from tests.server.users_support import add_user

Client = TestClient[web.Request, web.Application]


def command_app(config: ServerConfig) -> web.Application:
    """The server app with the command channel (wired here until the app factory does)."""
    app = create_app(config)
    if not any(op.path == SOCKET_PATH for op in server_app.OPERATIONS):
        app.add_routes([op.route() for op in OPERATIONS])
    if commands_ctx not in list(app.cleanup_ctx):
        install(app)
    return app


def add_people(db: Path | str) -> None:
    """An admin, a guard of site-a (the test kiosk's), a guard of site-b, an auditor."""
    add_user(db, "root", "admin")
    add_user(db, "gina", "guard", ["site-a"])
    add_user(db, "bob", "guard", ["site-b"])
    add_user(db, "otto", "auditor")


def server_key(db: Path | str) -> str:
    with connect(db) as conn:
        return server_public_key(conn)


def subscribe(client: Client) -> Subscription:
    return client.app[EVENTS].subscribe()


async def next_of(sub: Subscription, kind: str, timeout_s: float = 10.0) -> Event:
    """The next event of ``kind`` (others skipped)."""
    async with asyncio.timeout(timeout_s):
        async for event in sub:
            if event.kind == kind:
                return event
    raise AssertionError(f"no {kind} event")


async def fake_kiosk(
    ws: Any, key_hex: str, device_id: str, *, ack: bool = True
) -> list[SignedCommand]:
    """Answer commands as a kiosk would (checking them), until the socket closes."""
    got: list[SignedCommand] = []
    async for message in ws:
        data = json.loads(message.data)
        cmd = SignedCommand(**data["signed"])
        got.append(cmd)
        assert refusal(cmd, key_hex, device_id, cmd.issued_at, set()) == ""
        if ack:
            await ws.send_json({"type": "ack", "id": cmd.id, "ok": True})
    return got
