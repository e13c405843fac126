"""The command channel, server side: the kiosk socket, presence, guards' commands, scoping."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from provisioning.registry import DeviceBundle
from server.alerts.hooks import alerts_ctx
from server.appkeys import DIRECTORY
from server.commands import HUB, device_socket, hub
from server.config import ServerConfig
from server.events import presence
from server.storage.db import connect
from tests.server.users_support import bearer, token_for

from .support import Client, add_people, command_app, fake_kiosk, next_of, server_key, subscribe

GATE = "/v1/guard/kiosks/{}/gate"
COMMANDS = "/v1/guard/kiosks/{}/commands"


@pytest.fixture
async def client(aiohttp_client: Any, db_path: Path, config: ServerConfig) -> Client:
    add_people(db_path)
    return await aiohttp_client(command_app(config))  # type: ignore[no-any-return]


async def guard(client: Client, name: str = "gina") -> dict[str, str]:
    return bearer(await token_for(client, name))


def rows(db: Path | str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with connect(db) as conn:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]


async def linked(client: Client, device_id: str) -> None:
    """Until the hub holds the kiosk's socket and has recorded it for the fleet."""
    async with asyncio.timeout(10):
        while device_id not in client.app[
            HUB
        ].links or device_id not in await presence.kiosks_online(client.app):
            await asyncio.sleep(0.01)


async def test_a_guard_opens_the_gate_and_the_kiosk_acknowledges(
    client: Client, db_path: Path, device: DeviceBundle, auth: dict[str, str]
) -> None:
    sub = subscribe(client)
    ws = await client.ws_connect("/v1/device/ws", headers=auth)
    await linked(client, device.device_id)
    kiosk = asyncio.create_task(fake_kiosk(ws, server_key(db_path), device.device_id))
    resp = await client.post(
        GATE.format(device.device_id), json={"reason": "wheelchair"}, headers=await guard(client)
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["delivered"] is True and body["acked_at"].startswith("20")
    ack = await next_of(sub, "command_ack")
    assert ack.data["device_id"] == device.device_id and ack.data["site"] == "site-a"
    assert (ack.data["command"], ack.data["by"], ack.data["gate"]) == (
        "gate_open",
        "gina",
        "gate-1",
    )
    await ws.close()
    (cmd,) = await kiosk
    assert cmd.command == "gate_open" and cmd.args == {"reason": "wheelchair", "by": "gina"}
    assert cmd.expires_at - cmd.issued_at == 10
    stored = rows(db_path, "SELECT by_user, reason, ok FROM kiosk_commands WHERE id = ?", cmd.id)
    assert stored == [("gina", "wheelchair", 1)]


async def test_reload_and_speak_test_take_the_same_path(
    client: Client, db_path: Path, device: DeviceBundle, auth: dict[str, str]
) -> None:
    ws = await client.ws_connect("/v1/device/ws", headers=auth)
    await linked(client, device.device_id)
    kiosk = asyncio.create_task(fake_kiosk(ws, server_key(db_path), device.device_id))
    headers = await guard(client, "root")
    for name in ("config_reload", "speak_test"):
        resp = await client.post(
            COMMANDS.format(device.device_id), json={"command": name}, headers=headers
        )
        assert resp.status == 200, await resp.text()
    bad = await client.post(
        COMMANDS.format(device.device_id), json={"command": "gate_open"}, headers=headers
    )
    assert bad.status == 400
    await ws.close()
    assert [c.command for c in await kiosk] == ["config_reload", "speak_test"]


async def test_an_offline_kiosk_is_409_and_nothing_is_queued(
    client: Client, db_path: Path, device: DeviceBundle
) -> None:
    resp = await client.post(
        GATE.format(device.device_id), json={"reason": "test"}, headers=await guard(client)
    )
    assert resp.status == 409
    body = await resp.json()
    assert body["error"] == "offline" and "no live connection" in body["detail"]
    assert rows(db_path, "SELECT id FROM kiosk_commands") == []


async def test_a_kiosk_that_does_not_acknowledge_is_504(
    client: Client,
    db_path: Path,
    device: DeviceBundle,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub, "ACK_TIMEOUT_S", 0.3)
    ws = await client.ws_connect("/v1/device/ws", headers=auth)
    await linked(client, device.device_id)
    kiosk = asyncio.create_task(fake_kiosk(ws, server_key(db_path), device.device_id, ack=False))
    resp = await client.post(
        GATE.format(device.device_id), json={"reason": "test"}, headers=await guard(client)
    )
    assert resp.status == 504 and (await resp.json())["error"] == "not_acked"
    await ws.close()
    assert len(await kiosk) == 1


@pytest.mark.parametrize(
    ("who", "status"), [("bob", 403), ("otto", 403), ("gina", 409), ("root", 409)]
)
@pytest.mark.parametrize("path", [GATE, COMMANDS])
async def test_only_admins_and_the_sites_guards_may_command(
    client: Client, device: DeviceBundle, who: str, status: int, path: str
) -> None:
    body = {"reason": "x"} if path == GATE else {"command": "speak_test"}
    resp = await client.post(
        path.format(device.device_id), json=body, headers=await guard(client, who)
    )
    assert resp.status == status
    unknown = await client.post(path.format("nope"), json=body, headers=await guard(client, who))
    assert unknown.status == (403 if who == "otto" else 404)
    anonymous = await client.post(path.format(device.device_id), json=body)
    assert anonymous.status == 401


@pytest.mark.parametrize(
    "body", [{}, {"reason": ""}, {"reason": "x" * 201}, {"reason": "   "}, {"reason": 5}]
)
async def test_a_reason_is_required(client: Client, device: DeviceBundle, body: Any) -> None:
    resp = await client.post(GATE.format(device.device_id), json=body, headers=await guard(client))
    assert resp.status == 400


@pytest.mark.parametrize(
    ("reason", "number"),
    [
        ("for 11010519491231002X", "11010519491231002X"),
        ("visitor 138 0013 8000", "138 0013 8000"),
        ("call +8613900139000", "13900139000"),
    ],
)
async def test_a_reason_holding_an_id_or_phone_number_is_refused(
    client: Client, device: DeviceBundle, reason: str, number: str
) -> None:
    headers = await guard(client)
    resp = await client.post(
        GATE.format(device.device_id), json={"reason": reason}, headers=headers
    )
    assert resp.status == 400 and number not in await resp.text()
    # A reason with other numbers in it is fine (it then fails only as the kiosk is offline).
    fine = {"reason": "gate 3, 2 bags, ticket 20261128"}
    resp = await client.post(GATE.format(device.device_id), json=fine, headers=headers)
    assert resp.status == 409


async def test_a_closed_socket_marks_the_kiosk_down_at_once_and_a_reconnect_up(
    client: Client, db_path: Path, device: DeviceBundle, auth: dict[str, str]
) -> None:
    sub = subscribe(client)
    ws = await client.ws_connect("/v1/device/ws", headers=auth)
    up = await next_of(sub, "kiosk_up")
    assert up.data["device_id"] == device.device_id and up.data["back"] is False
    assert rows(db_path, "SELECT device_id FROM kiosk_links") == [(device.device_id,)]
    await ws.close()
    down = await next_of(sub, "kiosk_down")
    assert (down.data["device_id"], down.data["site"], down.data["gate"]) == (
        device.device_id,
        "site-a",
        "gate-1",
    )
    assert rows(db_path, "SELECT device_id FROM kiosk_down") == [(device.device_id,)]
    assert rows(db_path, "SELECT device_id FROM kiosk_links") == []
    ws = await client.ws_connect("/v1/device/ws", headers=auth)
    assert (await next_of(sub, "kiosk_up")).data["back"] is True
    assert rows(db_path, "SELECT device_id FROM kiosk_down") == []
    await ws.close()


async def test_a_kiosk_that_stops_answering_pings_is_dropped_and_marked_down(
    client: Client,
    db_path: Path,
    device: DeviceBundle,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(device_socket, "PING_S", 0.2)
    sub = subscribe(client)
    ws = await client.ws_connect("/v1/device/ws", headers=auth, autoping=False)
    await next_of(sub, "kiosk_up")
    # the fake kiosk reads nothing and answers no ping: it has vanished
    down = await next_of(sub, "kiosk_down", timeout_s=10)
    assert down.data["device_id"] == device.device_id
    assert rows(db_path, "SELECT device_id FROM kiosk_down") == [(device.device_id,)]
    await ws.close()


async def test_a_newer_socket_replaces_the_older_without_a_down(
    client: Client, db_path: Path, device: DeviceBundle, auth: dict[str, str]
) -> None:
    sub = subscribe(client)
    first = await client.ws_connect("/v1/device/ws", headers=auth)
    await next_of(sub, "kiosk_up")
    second = await client.ws_connect("/v1/device/ws", headers=auth)
    await next_of(sub, "kiosk_up")
    closed = await first.receive()
    assert closed.data == hub.CLOSE_REPLACED
    await asyncio.sleep(0.2)  # the first socket's close has been handled by now
    assert rows(db_path, "SELECT device_id FROM kiosk_down") == []
    assert len(rows(db_path, "SELECT link FROM kiosk_links")) == 1
    await second.close()
    await next_of(sub, "kiosk_down")


async def test_the_socket_needs_a_device_session_and_an_upgrade(
    client: Client, auth: dict[str, str]
) -> None:
    resp = await client.get("/v1/device/ws")
    assert resp.status == 401
    plain = await client.get("/v1/device/ws", headers=auth)
    assert plain.status == 400 and (await plain.json())["error"] == "websocket_required"


async def test_online_is_linked_or_heard_from_lately_and_not_down(
    client: Client, db_path: Path, device: DeviceBundle, auth: dict[str, str]
) -> None:
    online = presence.kiosks_online
    assert device.device_id not in await online(client.app)
    ws = await client.ws_connect("/v1/device/ws", headers=auth)
    await linked(client, device.device_id)
    assert device.device_id in await online(client.app)
    await ws.close()
    async with asyncio.timeout(10):
        while device.device_id in await online(client.app):
            await asyncio.sleep(0.02)
    resp = await client.post("/v1/heartbeat", json={"boot_id": "b"}, headers=auth)
    assert resp.status == 200
    with connect(db_path) as conn:
        assert presence.kiosk_online(conn, device.device_id, datetime.now(UTC))


async def test_a_revoked_kiosks_socket_is_closed(
    client: Client, db_path: Path, device: DeviceBundle, auth: dict[str, str]
) -> None:
    ws = await client.ws_connect("/v1/device/ws", headers=auth)
    await linked(client, device.device_id)
    with connect(db_path) as conn:
        conn.execute(
            "UPDATE devices SET status = 'revoked' WHERE device_id = ?", (device.device_id,)
        )
        if hasattr(conn, "commit"):
            conn.commit()
    client.app[DIRECTORY].invalidate(device.device_id)
    await client.app[HUB]._close_ended()  # what the hub's keeper does every 10 s
    closed = await ws.receive()
    assert closed.data == hub.CLOSE_SESSION
    again = await client.get("/v1/device/ws", headers=auth)
    assert again.status == 403


async def test_a_closed_socket_raises_the_offline_alert_and_a_reconnect_clears_it(
    aiohttp_client: Any,
    db_path: Path,
    config: ServerConfig,
    device: DeviceBundle,
    auth: dict[str, str],
) -> None:
    app = command_app(config)
    if alerts_ctx not in list(app.cleanup_ctx):
        app.cleanup_ctx.append(alerts_ctx)
    client: Client = await aiohttp_client(app)
    sql = "SELECT cleared_at FROM alerts WHERE device_id = ? AND kind = 'kiosk_offline'"
    ws = await client.ws_connect("/v1/device/ws", headers=auth)
    await linked(client, device.device_id)
    await ws.close()
    async with asyncio.timeout(10):
        while rows(db_path, sql, device.device_id) != [(None,)]:
            await asyncio.sleep(0.02)
    ws = await client.ws_connect("/v1/device/ws", headers=auth)
    async with asyncio.timeout(10):
        while rows(db_path, sql, device.device_id)[0][0] is None:
            await asyncio.sleep(0.02)
    await ws.close()


async def test_held_sockets_do_not_take_the_device_request_ceiling(
    aiohttp_client: Any, db_path: Path, config: ServerConfig, auth: dict[str, str], device: Any
) -> None:
    """A socket is held for hours: were it counted in flight, a fleet of linked kiosks (more
    than ``device_inflight``) would have every tap refused with 429."""
    add_people(db_path)
    tight = replace(config, limits=msgspec.structs.replace(config.limits, device_inflight=1))
    client = await aiohttp_client(command_app(tight))
    ws = await client.ws_connect("/v1/device/ws", headers=auth)
    await linked(client, device.device_id)
    beat = await client.post("/v1/heartbeat", json={"boot_id": "b"}, headers=auth)
    assert beat.status == 200
    await ws.close()
