"""Two server processes on one database (two apps in this test, each with its own event
bus): a command posted to the one that does not hold the kiosk's socket reaches the kiosk
through the bus on PostgreSQL; on SQLite the bus stays in its process (docs/commands.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from provisioning.registry import DeviceBundle
from server.commands import HUB, hub
from server.config import ServerConfig
from server.events import EVENTS
from server.events.postgres import PgEventBus
from tests.server.users_support import bearer, token_for

from .support import Client, add_people, command_app, fake_kiosk, next_of, server_key


async def started(aiohttp_client: Any, config: ServerConfig) -> Client:
    client: Client = await aiohttp_client(command_app(config))
    bus = client.app[EVENTS]
    if isinstance(bus, PgEventBus):
        await bus.listening()
    return client


async def test_a_command_posted_to_another_process_reaches_the_kiosk_on_postgresql(
    aiohttp_client: Any,
    db_path: Path | str,
    config: ServerConfig,
    device: DeviceBundle,
    auth: dict[str, str],
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(hub, "ACK_TIMEOUT_S", 5.0 if isinstance(db_path, str) else 0.5)
    add_people(db_path)
    holder = await started(aiohttp_client, config)
    other = await started(aiohttp_client, config)
    watch = other.app[EVENTS].subscribe()
    ws = await holder.ws_connect("/v1/device/ws", headers=auth)
    async with asyncio.timeout(10):
        while device.device_id not in holder.app[HUB].links:
            await asyncio.sleep(0.01)
    kiosk = asyncio.create_task(fake_kiosk(ws, server_key(db_path), device.device_id))
    resp = await other.post(
        f"/v1/guard/kiosks/{device.device_id}/gate",
        json={"reason": "delivery van"},
        headers=bearer(await token_for(other, "gina")),
    )
    await ws.close()
    got = await kiosk
    if isinstance(db_path, str):  # PostgreSQL: the bus crosses processes
        assert resp.status == 200, await resp.text()
        assert [c.args["reason"] for c in got] == ["delivery van"]
        ack = await next_of(watch, "command_ack")
        assert ack.data["by"] == "gina" and ack.data["device_id"] == device.device_id
    else:  # SQLite: the kiosk is linked (the table says so) but out of this bus's reach
        assert resp.status == 504 and got == []
