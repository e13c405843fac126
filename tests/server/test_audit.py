"""POST /v1/audit: idempotent storage, high-water mark, hash chain verification."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from provisioning.registry import DeviceBundle, add_device

GENESIS = "0" * 64


def event_hash(event: dict[str, Any]) -> str:
    body = {k: v for k, v in event.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chain(first: int, last: int, prev: str = GENESIS) -> list[dict[str, Any]]:
    """Events first..last, hash-chained as a kiosk would write them."""
    events = []
    for seq in range(first, last + 1):
        event: dict[str, Any] = {
            "seq": seq,
            "wall_time": f"2026-11-23T08:00:{seq % 60:02d}+08:00",
            "mono_ns": 1_000_000 * seq,
            "boot_id": "boot-1",
            "clock_trusted": True,
            "kind": "decision",
            "outcome": "pass",
            "prompt": "绿码通行",
            "masked_id": "1101**********4514",
            "pseudonym": "ab" * 32,
            "offline": seq % 2 == 0,
            "cache_age_s": 12.5 if seq % 2 == 0 else None,
            "latency_ms": 83.25,
            "detail": {"reasons": [], "tap_id": f"k1-{seq:06d}"},
            "prev_hash": prev,
        }
        event["hash"] = event_hash(event)
        prev = event["hash"]
        events.append(event)
    return events


async def post(client: TestClient, auth: dict[str, str], events: list[dict[str, Any]]) -> Any:
    resp = await client.post("/v1/audit", json={"events": events}, headers=auth)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def stored(db_path: Path, device_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(
            "SELECT seq, chain_ok, masked_id, detail FROM audit_events WHERE device_id = ?"
            " ORDER BY seq",
            (device_id,),
        ).fetchall()


async def test_batch_then_resend(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, db_path: Path
) -> None:
    events = chain(1, 10)
    assert await post(client, auth, events) == {
        "acked_seq": 10,
        "stored": 10,
        "duplicates": 0,
        "chain_breaks": [],
    }
    # resend, overlapping with new events
    more = chain(11, 15, prev=events[-1]["hash"])
    answer = await post(client, auth, events[5:] + more)
    assert answer == {"acked_seq": 15, "stored": 5, "duplicates": 5, "chain_breaks": []}
    rows = stored(db_path, device.device_id)
    assert [r[0] for r in rows] == list(range(1, 16))
    assert {r[1] for r in rows} == {1}
    assert json.loads(rows[0][3]) == {"reasons": [], "tap_id": "k1-000001"}


async def test_gap_stops_acked_seq_then_fills(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, db_path: Path
) -> None:
    events = chain(1, 8)
    answer = await post(client, auth, events[:3] + events[4:])  # seq 4 missing
    assert answer == {"acked_seq": 3, "stored": 7, "duplicates": 0, "chain_breaks": []}
    assert dict((r[0], r[1]) for r in stored(db_path, device.device_id))[5] is None  # pending
    answer = await post(client, auth, events[3:6])
    assert answer == {"acked_seq": 8, "stored": 1, "duplicates": 2, "chain_breaks": []}
    assert {r[1] for r in stored(db_path, device.device_id)} == {1}


async def test_batch_after_gap_is_not_acked(client: TestClient, auth: dict[str, str]) -> None:
    events = chain(1, 6)
    await post(client, auth, events[:2])
    answer = await post(client, auth, events[4:])
    assert answer["acked_seq"] == 2
    assert answer["stored"] == 2


async def test_tampered_hash_and_prev_hash(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, db_path: Path
) -> None:
    events = chain(1, 6)
    events[2]["outcome"] = "check"  # content changed after hashing: hash no longer matches
    events[4]["prev_hash"] = "1" * 64  # re-hashed, but linked to the wrong predecessor
    events[4]["hash"] = event_hash(events[4])  # ... so seq 6 no longer links to it either
    answer = await post(client, auth, events)
    assert answer == {"acked_seq": 6, "stored": 6, "duplicates": 0, "chain_breaks": [3, 5, 6]}
    flags = {r[0]: r[1] for r in stored(db_path, device.device_id)}
    assert flags == {1: 1, 2: 1, 3: 0, 4: 1, 5: 0, 6: 0}
    # a resend reports nothing new and stores nothing twice
    answer = await post(client, auth, events)
    assert answer == {"acked_seq": 6, "stored": 0, "duplicates": 6, "chain_breaks": []}
    assert len(stored(db_path, device.device_id)) == 6


async def test_first_event_must_link_to_genesis(client: TestClient, auth: dict[str, str]) -> None:
    events = chain(1, 2, prev="f" * 64)
    assert (await post(client, auth, events))["chain_breaks"] == [1]


async def test_late_predecessor_with_wrong_link(client: TestClient, auth: dict[str, str]) -> None:
    events = chain(1, 3)
    await post(client, auth, [events[0], events[2]])
    other = chain(2, 2, prev=events[0]["hash"])[0]
    other["boot_id"] = "another boot"
    other["hash"] = event_hash(other)  # a valid event 2, but not the one seq 3 links to
    answer = await post(client, auth, [other])
    assert answer["chain_breaks"] == [3]
    assert answer["acked_seq"] == 3


async def test_changed_resend_is_reported(client: TestClient, auth: dict[str, str]) -> None:
    events = chain(1, 2)
    await post(client, auth, events)
    changed = chain(1, 2)
    changed[1]["latency_ms"] = 1.0
    changed[1]["hash"] = event_hash(changed[1])
    answer = await post(client, auth, changed)
    assert answer == {"acked_seq": 2, "stored": 0, "duplicates": 2, "chain_breaks": [2]}


async def test_devices_are_separate(
    client: TestClient, auth: dict[str, str], db_path: Path
) -> None:
    other = add_device(db_path, "SN-0002", "site-a")
    other_auth = {"Authorization": f"Bearer {other.device_id}.{other.secret}"}
    events = chain(1, 3)
    assert (await post(client, auth, events))["stored"] == 3
    assert (await post(client, other_auth, events))["stored"] == 3


async def test_no_clear_id_numbers_stored(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, db_path: Path
) -> None:
    events = chain(1, 1)
    events[0]["masked_id"] = "110101199003074514"
    events[0]["hash"] = event_hash(events[0])
    resp = await client.post("/v1/audit", json={"events": events}, headers=auth)
    assert resp.status == 400
    events = chain(1, 1)
    events[0]["detail"] = {"note": "card 110101199003074514 read"}
    events[0]["hash"] = event_hash(events[0])
    resp = await client.post("/v1/audit", json={"events": events}, headers=auth)
    assert resp.status == 400
    assert stored(db_path, device.device_id) == []
