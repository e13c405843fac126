"""Board fixtures: the storage tests' database on both backends, and a small fleet of three
kiosks on two sites with a guard per site, an admin and an auditor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from provisioning.registry import DeviceBundle, add_device
from siheyi.cli import local_fleet
from tests.board.support import board_app
from tests.server.conftest import bearer
from tests.server.users_support import add_user


@dataclass(frozen=True)
class Scene:
    db: Path | str
    a1: DeviceBundle  # site-a, gate-1
    a2: DeviceBundle  # site-a, gate-2
    b1: DeviceBundle  # site-b, gate-1

    def device_auth(self, device: DeviceBundle) -> dict[str, str]:
        return bearer(self.db, device)  # type: ignore[arg-type]


@pytest.fixture
def db_path(any_database: Path | str) -> Path | str:
    """The server's database: each test using it runs on SQLite and on PostgreSQL."""
    return any_database


@pytest.fixture
def scene(db_path: Path | str) -> Scene:
    fleet = local_fleet(None, db_path)
    kiosks = [
        add_device(fleet, serial, site, gate, server_url="http://test")
        for serial, site, gate in (
            ("SN-A1", "site-a", "gate-1"),
            ("SN-A2", "site-a", "gate-2"),
            ("SN-B1", "site-b", "gate-1"),
        )
    ]
    add_user(db_path, "guard-a", "guard", ["site-a"])
    add_user(db_path, "guard-b", "guard", ["site-b"])
    add_user(db_path, "boss", "admin")
    add_user(db_path, "reader", "auditor")
    return Scene(db_path, *kiosks)


@pytest.fixture
async def client(aiohttp_client: Any, scene: Scene) -> TestClient[web.Request, web.Application]:
    return await aiohttp_client(board_app(scene.db))  # type: ignore[no-any-return]
