from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from aiohttp.test_utils import TestClient

from provisioning.registry import DeviceBundle
from server.storage.db import connect


async def test_heartbeat_stores_status(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, db_path: Path
) -> None:
    status = {
        "boot_id": "boot-1",
        "uptime_s": 12.5,
        "version": "0.1.0",
        "clock_trusted": True,
        "journal_pending": 3,
        "reader": {"connected": True, "last_read_at": None, "errors": {}},
    }
    resp = await client.post("/v1/heartbeat", json=status, headers=auth)
    assert resp.status == 200
    body = await resp.json()
    assert body["commands"] == []
    server_time = datetime.fromisoformat(body["server_time"])
    assert abs((datetime.now(UTC) - server_time).total_seconds()) < 5
    with connect(db_path) as conn:
        last, seen = conn.execute(
            "SELECT last_heartbeat, last_seen_at FROM devices WHERE device_id = ?",
            (device.device_id,),
        ).fetchone()
    assert json.loads(last) == status
    assert seen == body["server_time"]


async def test_heartbeat_minimal(client: TestClient, auth: dict[str, str]) -> None:
    resp = await client.post("/v1/heartbeat", json={"boot_id": "b"}, headers=auth)
    assert resp.status == 200


async def test_a_full_journal_is_kept_as_kiosk_state(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, db_path: Path
) -> None:
    journal = {"full": True, "reserve": "in_use", "held": 4, "dead_letters": 1, "lost": 0,
               "epoch": "a" * 32}  # fmt: skip
    resp = await client.post(
        "/v1/heartbeat", json={"boot_id": "b", "journal": journal}, headers=auth
    )
    assert resp.status == 200
    assert (await resp.json())["audit"] == {"epochs": 0, "events": 0}
    resp = await client.post("/v1/heartbeat", json={"boot_id": "b"}, headers=auth)
    assert resp.status == 200  # a heartbeat without a journal report changes nothing
    with connect(db_path) as conn:
        full, kept, problem = conn.execute(
            "SELECT journal_full, journal, last_problem_at FROM audit_device_state"
            " WHERE device_id = ?",
            (device.device_id,),
        ).fetchone()
    assert full == 1 and json.loads(kept) == journal and problem is not None
    journal |= {"full": False, "reserve": "ready", "held": 0}
    resp = await client.post(
        "/v1/heartbeat", json={"boot_id": "b", "journal": journal}, headers=auth
    )
    with connect(db_path) as conn:
        (full,) = conn.execute("SELECT journal_full FROM audit_device_state").fetchone()
    assert full == 0


async def test_the_answer_says_what_audit_the_server_holds(
    client: TestClient, auth: dict[str, str]
) -> None:
    from .test_audit import chain, post

    await post(client, auth, chain(1, 4))
    resp = await client.post("/v1/heartbeat", json={"boot_id": "b"}, headers=auth)
    assert (await resp.json())["audit"] == {"epochs": 1, "events": 4}
