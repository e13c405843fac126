"""POST /v1/audit: idempotent storage, high-water mark, hash chain verification."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from provisioning.registry import DeviceBundle, add_device
from siheyi.cli import local_fleet

from .conftest import bearer

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
        "conflicts": [],
    }
    # resend, overlapping with new events
    more = chain(11, 15, prev=events[-1]["hash"])
    answer = await post(client, auth, events[5:] + more)
    assert answer == {
        "acked_seq": 15,
        "stored": 5,
        "duplicates": 5,
        "chain_breaks": [],
        "conflicts": [],
    }
    rows = stored(db_path, device.device_id)
    assert [r[0] for r in rows] == list(range(1, 16))
    assert {r[1] for r in rows} == {1}
    assert json.loads(rows[0][3]) == {"reasons": [], "tap_id": "k1-000001"}


async def test_gap_stops_acked_seq_then_fills(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, db_path: Path
) -> None:
    events = chain(1, 8)
    answer = await post(client, auth, events[:3] + events[4:])  # seq 4 missing
    assert answer == {
        "acked_seq": 3,
        "stored": 7,
        "duplicates": 0,
        "chain_breaks": [],
        "conflicts": [],
    }
    assert dict((r[0], r[1]) for r in stored(db_path, device.device_id))[5] is None  # pending
    answer = await post(client, auth, events[3:6])
    assert answer == {
        "acked_seq": 8,
        "stored": 1,
        "duplicates": 2,
        "chain_breaks": [],
        "conflicts": [],
    }
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
    assert answer == {
        "acked_seq": 6,
        "stored": 6,
        "duplicates": 0,
        "chain_breaks": [3, 5, 6],
        "conflicts": [],
    }
    flags = {r[0]: r[1] for r in stored(db_path, device.device_id)}
    assert flags == {1: 1, 2: 1, 3: 0, 4: 1, 5: 0, 6: 0}
    # a resend reports nothing new and stores nothing twice
    answer = await post(client, auth, events)
    assert answer == {
        "acked_seq": 6,
        "stored": 0,
        "duplicates": 6,
        "chain_breaks": [],
        "conflicts": [],
    }
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


def conflicts(db_path: Path, device_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(
            "SELECT seq, hash, prev_hash, boot_id, latency_ms, detail, hash_ok"
            " FROM audit_conflicts WHERE device_id = ? ORDER BY seq, received_at",
            (device_id,),
        ).fetchall()


async def test_changed_resend_is_kept_as_conflict(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, db_path: Path
) -> None:
    events = chain(1, 2)
    await post(client, auth, events)
    changed = chain(1, 2)
    changed[1]["latency_ms"] = 1.0
    changed[1]["hash"] = event_hash(changed[1])
    answer = await post(client, auth, changed)
    assert answer == {
        "acked_seq": 2,
        "stored": 1,
        "duplicates": 1,
        "chain_breaks": [2],
        "conflicts": [2],
    }
    [row] = conflicts(db_path, device.device_id)
    assert row[:5] == (2, changed[1]["hash"], changed[1]["prev_hash"], "boot-1", 1.0)
    assert json.loads(row[5]) == changed[1]["detail"]
    assert row[6] == 1
    # the first version stays in audit_events
    assert stored(db_path, device.device_id)[1][0] == 2
    # resending the conflicting version again stores nothing twice
    answer = await post(client, auth, changed)
    assert answer == {
        "acked_seq": 2,
        "stored": 0,
        "duplicates": 2,
        "chain_breaks": [],
        "conflicts": [],
    }
    assert len(conflicts(db_path, device.device_id)) == 1


async def test_reset_journal_loses_nothing(
    client: TestClient,
    auth: dict[str, str],
    device: DeviceBundle,
    db_path: Path,
    caplog: Any,
) -> None:
    """A kiosk whose journal was reset starts again at seq 1 under the same device id."""
    old = chain(1, 5)
    await post(client, auth, old)
    new = chain(1, 7)
    for event in new:  # a different boot: every hash differs from the stored ones
        event["boot_id"] = "boot-after-sd-swap"
    prev = "0" * 64
    for event in new:
        event["prev_hash"] = prev
        event["hash"] = prev = event_hash(event)
    caplog.set_level("WARNING", logger="server.audit.ingestion")
    answer = await post(client, auth, new)
    assert answer["conflicts"] == [1, 2, 3, 4, 5]
    assert answer["acked_seq"] == 7
    assert answer["stored"] == 7
    assert answer["duplicates"] == 0
    assert answer["chain_breaks"] == [1, 2, 3, 4, 5, 6]  # 6 links to the new 5, not the old
    kept = conflicts(db_path, device.device_id)
    assert [(r[0], r[1]) for r in kept] == [(e["seq"], e["hash"]) for e in new[:5]]
    assert {r[3] for r in kept} == {"boot-after-sd-swap"}
    # every acknowledged event of the new journal is stored somewhere
    with sqlite3.connect(db_path) as conn:
        hashes = {
            h
            for table in ("audit_events", "audit_conflicts")
            for (h,) in conn.execute(
                f"SELECT hash FROM {table} WHERE device_id = ?", (device.device_id,)
            )
        }
    assert {e["hash"] for e in new} <= hashes
    warnings = [r for r in caplog.records if "audit_conflicts" in r.getMessage()]
    assert len(warnings) == 1  # once per batch, not per event


async def test_devices_are_separate(
    client: TestClient, auth: dict[str, str], db_path: Path
) -> None:
    other = add_device(local_fleet(None, db_path), "SN-0002", "site-a")
    other_auth = bearer(db_path, other)
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


async def test_a_kiosk_up_for_years_is_not_refused_for_its_clock(
    client: TestClient, auth: dict[str, str]
) -> None:
    """``mono_ns`` has 18 digits after ~3.2 years of uptime; it is a counter, not an ID, and
    refusing it would block the kiosk's audit for good. An ID hidden in ``detail`` as an
    integer is still refused."""
    events = chain(1, 1)
    events[0]["mono_ns"] = 110101199003074514
    events[0]["hash"] = event_hash(events[0])
    assert (await post(client, auth, events))["acked_seq"] == 1
    leak = chain(2, 2, prev=events[0]["hash"])
    leak[0]["detail"]["n"] = 110101199003074514
    leak[0]["hash"] = event_hash(leak[0])
    resp = await client.post("/v1/audit", json={"events": leak}, headers=auth)
    assert resp.status == 400
    assert "events[0].detail.n" in (await resp.json())["detail"]
