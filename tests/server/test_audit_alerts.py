"""GET /v1/admin/audit/alerts: the audit state alerts are raised from, for administrators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from core.wire_admin import AuditAlerts
from provisioning.registry import DeviceBundle, add_device, revoke_device
from server.accounts.passwords import hash_password
from server.app import create_app
from server.config import ServerConfig
from server.fleet.admin import create_admin
from server.storage.db import connect, transaction
from siheyi.cli import local_fleet

from .conftest import bearer
from .test_admin import PASSWORD, login
from .test_audit import chain, event_hash
from .test_cut_off import own_key, sign_in


@pytest.fixture
def admin_db(db_path: Path) -> Path:
    with connect(db_path) as conn, transaction(conn):
        create_admin(conn, "ops", hash_password(PASSWORD), "2026-01-01T00:00:00+00:00")
        conn.execute("INSERT INTO sites (site) VALUES ('north')")
    return db_path


@pytest.fixture
async def admin(aiohttp_client: Any, config: ServerConfig, admin_db: Path) -> TestClient:
    return await aiohttp_client(create_app(config))  # type: ignore[no-any-return]


async def test_alerts_list_each_kind_of_trouble_for_admins_only(
    admin: TestClient, admin_db: Path
) -> None:
    fleet = local_fleet(None, admin_db)
    devices: dict[str, DeviceBundle] = {
        name: add_device(fleet, f"SN-{name}", "north", f"gate-{name}")
        for name in ("clean", "conflict", "full", "revoked")
    }
    tokens = {name: bearer(admin_db, bundle) for name, bundle in devices.items()}

    async def upload(name: str, events: list[dict[str, Any]], auth: dict[str, str]) -> None:
        resp = await admin.post("/v1/audit", json={"events": events}, headers=auth)
        assert resp.status == 200, (name, await resp.text())

    for name in devices:
        await upload(name, chain(1, 2), tokens[name])
    changed = chain(1, 2)[1] | {"outcome": "check"}
    await upload("conflict", [changed | {"hash": event_hash(changed)}], tokens["conflict"])
    journal = {"full": True, "reserve": "in_use", "held": 2, "dead_letters": 0, "lost": 0}
    resp = await admin.post(
        "/v1/heartbeat", json={"boot_id": "b", "journal": journal}, headers=tokens["full"]
    )
    assert resp.status == 200
    revoke_device(fleet, devices["revoked"].serial)
    refusal = await sign_in(admin, devices["revoked"].device_id, own_key(devices["revoked"]))
    assert refusal.status == 403
    audit_only = {"Authorization": f"Bearer {(await refusal.json())['audit_token']}"}
    await upload("revoked", chain(1, 3)[2:], audit_only)

    for headers in ({}, tokens["clean"]):  # no token; a device token is not an admin's
        resp = await admin.get("/v1/admin/audit/alerts", headers=headers)
        assert resp.status == 401
    resp = await admin.get("/v1/admin/audit/alerts", headers=await login(admin))
    assert resp.status == 200
    answer = msgspec.convert(await resp.json(), AuditAlerts)
    by_id = {alert.device_id: alert for alert in answer.devices}
    assert set(by_id) == {devices[n].device_id for n in ("conflict", "full", "revoked")}
    conflict = by_id[devices["conflict"].device_id]
    assert (conflict.conflicts, conflict.chain_breaks, conflict.serial) == (1, 1, "SN-conflict")
    assert (conflict.site, conflict.gate, conflict.status) == ("north", "gate-conflict", "active")
    full = by_id[devices["full"].device_id]
    assert full.journal_full and full.journal is not None and full.journal.held == 2
    assert full.journal_seen_at is not None
    revoked = by_id[devices["revoked"].device_id]
    assert (revoked.status, revoked.flagged, revoked.conflicts) == ("revoked", 1, 0)
    assert all(alert.last_problem_at for alert in answer.devices)
    stamps = [alert.last_problem_at or "" for alert in answer.devices]
    assert stamps == sorted(stamps, reverse=True)  # latest problem first


async def test_no_trouble_no_alerts(admin: TestClient) -> None:
    resp = await admin.get("/v1/admin/audit/alerts", headers=await login(admin))
    assert (resp.status, await resp.json()) == (200, {"devices": []})
