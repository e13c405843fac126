"""An app with the alert machinery, a clock the test moves, and a record of what was
published — shared by the alert tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from server.alerts import hooks, service
from server.alerts.hooks import ALERT_SETTINGS, ALERT_TICK_S, ALERTS, alerts_ctx
from server.alerts.service import AlertService
from server.alerts.settings import AlertSettings
from server.alerts.views import OPERATIONS
from server.app import create_app
from server.config import ServerConfig
from server.fleet.devices import Device
from server.storage.db import connect, transaction

KIOSK = Device("dev-a1", "SN-A1", "site-a", "gate-1", "east", "active")
OTHER = Device("dev-b1", "SN-B1", "site-b", "gate-9", "west", "active")


class Clock:
    """A server clock that moves only when told."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Published:
    """Every ``alert_*`` event the alert code published, in order, with its app."""

    events: list[tuple[web.Application, str, dict[str, Any]]] = field(default_factory=list)

    def kinds(self, alert_kind: str | None = None) -> list[str]:
        return [k for _, k, d in self.events if alert_kind in (None, d.get("kind"))]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Published:
    record = Published()
    real = service.emit

    def spy(app: web.Application, kind: str, data: dict[str, Any]) -> None:
        record.events.append((app, kind, data))
        real(app, kind, data)

    monkeypatch.setattr(service, "emit", spy)
    return record


def alert_app(
    config: ServerConfig,
    clock: Callable[[], datetime] | None,
    settings: AlertSettings | None = None,
) -> web.Application:
    """The real app with the alert context and routes (added here unless the app factory
    already wires them); ``clock`` None: the real one."""
    register(config.database, KIOSK, OTHER)
    app = create_app(config, clock=clock)
    app[ALERT_SETTINGS] = settings or AlertSettings()
    app[ALERT_TICK_S] = 3600.0  # the tests run hooks.tick themselves
    if alerts_ctx not in app.cleanup_ctx:
        app.cleanup_ctx.append(alerts_ctx)
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    app.add_routes([op.route() for op in OPERATIONS if op.path not in paths])
    return app


def register(database: str, *devices: Device) -> None:
    """Put kiosks in the devices table as they are (the background check clears the
    alerts of kiosks it does not find there)."""
    with connect(database) as conn, transaction(conn):
        for d in devices:
            conn.execute(
                "INSERT INTO devices (device_id, serial, site, gate, location, status,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (d.device_id, d.serial, d.site, d.gate, d.location, d.status, "2026-01-01"),
            )


def alerts_of(app: web.Application) -> AlertService:
    return app[ALERTS]


async def beat(app: web.Application, device: Device = KIOSK, **status: Any) -> None:
    """A heartbeat of a healthy kiosk, changed by ``status``."""
    body: dict[str, Any] = {
        "boot_id": "b-1",
        "clock_trusted": True,
        "journal_pending": 0,
        "reader": {"url": "http://127.0.0.1:1/reader", "connected": True},
        "sources": [],
        "cache": {"hits": 0, "misses": 0, "expired": 0},
    }
    body.update(status)
    await hooks.observe_heartbeat(app, device, body)
