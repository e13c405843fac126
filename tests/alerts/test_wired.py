"""The alert hooks as the server calls them: a kiosk's real heartbeats and audit uploads
raise and clear alerts a guard then lists. Runs once the app factory wires server.alerts
(``alerts_ctx`` in ``create_app``; the heartbeat and ``POST /v1/audit`` call the hooks)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from provisioning.registry import DeviceBundle
from server.alerts.hooks import ALERT_TICK_S, ALERTS, alerts_ctx, tick
from server.alerts.settings import AlertSettings
from server.app import create_app
from server.appkeys import CLOCK, DATABASE
from server.config import ServerConfig
from server.events import presence
from tests.server.conftest import bearer as device_bearer
from tests.server.test_audit import GENESIS, event_hash
from tests.server.users_support import add_user, bearer, token_for


def test_the_app_factory_wires_the_alerts() -> None:
    assert alerts_ctx in create_app(ServerConfig.default()).cleanup_ctx


Client = TestClient[web.Request, web.Application]
READER = {"url": "http://127.0.0.1:1/reader", "connected": True}


@pytest.fixture
async def wired(
    aiohttp_client: Any, config: ServerConfig, db_path: Path | str, device: DeviceBundle
) -> Client:
    add_user(db_path, "guard-a", "guard", ["site-a"])
    settings = AlertSettings(invalid_threshold=3)
    app = create_app(dataclasses.replace(config, alerts=settings))  # type: ignore[call-arg]
    client: Client = await aiohttp_client(app)
    return client


async def guard_alerts(client: Client) -> list[dict[str, Any]]:
    headers = bearer(await token_for(client, "guard-a"))
    resp = await client.get("/v1/guard/alerts", headers=headers)
    assert resp.status == 200
    alerts: list[dict[str, Any]] = (await resp.json())["alerts"]
    return alerts


async def test_a_reader_unplugged_raises_an_alert_and_plugged_back_clears_it(
    wired: Client, db_path: Path | str, device: DeviceBundle
) -> None:
    auth = device_bearer(db_path, device)  # type: ignore[arg-type]
    unplugged = {"boot_id": "b", "reader": {**READER, "connected": False}}
    assert (await wired.post("/v1/heartbeat", json=unplugged, headers=auth)).status == 200
    [alert] = await guard_alerts(wired)
    assert (alert["kind"], alert["device_id"], alert["gate"]) == (
        "reader_fault", device.device_id, "gate-1",
    )  # fmt: skip
    plugged = {"boot_id": "b", "reader": READER}
    assert (await wired.post("/v1/heartbeat", json=plugged, headers=auth)).status == 200
    assert await guard_alerts(wired) == []


async def test_invalid_credentials_uploaded_from_one_gate_raise_a_gate_alert(
    wired: Client, db_path: Path | str, device: DeviceBundle
) -> None:
    auth = device_bearer(db_path, device)  # type: ignore[arg-type]
    now = datetime.now(UTC).isoformat(timespec="seconds")
    events, prev = [], GENESIS
    for seq in range(1, 4):
        event: dict[str, Any] = {
            "seq": seq, "wall_time": now, "mono_ns": seq, "boot_id": "b",
            "clock_trusted": True, "kind": "decision", "outcome": "invalid_credential",
            "offline": False, "prev_hash": prev,
        }  # fmt: skip
        event["hash"] = prev = event_hash(event)
        events.append(event)
    resp = await wired.post("/v1/audit", json={"events": events[:2]}, headers=auth)
    assert resp.status == 200
    assert await guard_alerts(wired) == []
    resp = await wired.post("/v1/audit", json={"events": events[:2]}, headers=auth)
    assert resp.status == 200  # resent: counted once
    assert await guard_alerts(wired) == []
    resp = await wired.post("/v1/audit", json={"events": events[2:]}, headers=auth)
    [alert] = await guard_alerts(wired)
    assert (alert["kind"], alert["device_id"], alert["site"], alert["gate"]) == (
        "invalid_credentials", None, "site-a", "gate-1",
    )  # fmt: skip
    assert alert["detail"]["taps"] == 3


async def test_a_kiosk_announced_down_is_alerted_and_its_next_heartbeat_clears_it(
    aiohttp_client: Any, config: ServerConfig, db_path: Path | str, device: DeviceBundle
) -> None:
    add_user(db_path, "guard-a", "guard", ["site-a"])
    app = create_app(config)
    app[ALERT_TICK_S] = 3600.0  # this test runs the background check itself
    client: Client = await aiohttp_client(app)
    auth = device_bearer(db_path, device)  # type: ignore[arg-type]
    assert (await client.post("/v1/heartbeat", json={"boot_id": "b"}, headers=auth)).status == 200
    await app[DATABASE].run(lambda conn: presence.mark_down(conn, device.device_id, app[CLOCK]()))
    await tick(app[ALERTS])
    [alert] = await guard_alerts(client)
    assert (alert["kind"], alert["device_id"]) == ("kiosk_offline", device.device_id)
    assert (await client.post("/v1/heartbeat", json={"boot_id": "b"}, headers=auth)).status == 200
    assert await guard_alerts(client) == []
