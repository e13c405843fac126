"""POST /v1/audit: idempotent storage, high-water mark, hash chain verification."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from provisioning.registry import DeviceBundle, add_device
from server.storage.db import connect
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


def runs(seqs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for seq in seqs:
        if out and out[-1][1] == seq - 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


async def post(client: TestClient, auth: dict[str, str], events: list[dict[str, Any]]) -> Any:
    """The answer without ``held`` and ``epoch``, checked here for every batch: the server
    holds every event of a batch it accepted, whatever else it says."""
    resp = await client.post("/v1/audit", json={"events": events}, headers=auth)
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer.pop("held") == runs([e["seq"] for e in events])
    assert answer.pop("epoch") == events[0].get("epoch", "")
    return answer


def stored(db_path: Path, device_id: str) -> list[tuple[Any, ...]]:
    with connect(db_path) as conn:
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
    with connect(db_path) as conn:
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
    with connect(db_path) as conn:
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


# ------------------------------------------------------------------ epochs (issue 10, part 3)


def in_epoch(events: list[dict[str, Any]], epoch: str) -> list[dict[str, Any]]:
    """The same events written by a journal of epoch ``epoch`` (the hash covers it)."""
    prev, out = GENESIS, []
    for event in events:
        moved = {**event, "epoch": epoch, "prev_hash": prev}
        moved["hash"] = prev = event_hash(moved)
        out.append(moved)
    return out


async def test_a_new_journal_epoch_never_collides_with_the_past(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, db_path: Path
) -> None:
    legacy = chain(1, 5)  # a kiosk from before epochs
    assert (await post(client, auth, legacy))["acked_seq"] == 5
    demo = in_epoch(chain(1, 5), "a" * 32)  # e.g. `kiosk demo` with this kiosk's bundle
    answer = await post(client, auth, demo)
    assert (answer["acked_seq"], answer["stored"], answer["conflicts"]) == (5, 5, [])
    real = in_epoch(chain(1, 3), "b" * 32)  # the real kiosk's next events, a new SD card
    real[0]["outcome"] = "pass"
    real = in_epoch(real, "b" * 32)
    answer = await post(client, auth, real)
    assert (answer["acked_seq"], answer["conflicts"], answer["chain_breaks"]) == (3, [], [])
    assert conflicts(db_path, device.device_id) == []
    with connect(db_path) as conn:
        rows = conn.execute(
            "SELECT epoch, count(*), min(chain_ok) FROM audit_events WHERE device_id = ?"
            " GROUP BY epoch ORDER BY epoch",
            (device.device_id,),
        ).fetchall()
    assert rows == [("", 5, 1), ("a" * 32, 5, 1), ("b" * 32, 3, 1)]


async def test_a_batch_holds_one_epoch(client: TestClient, auth: dict[str, str]) -> None:
    events = [*in_epoch(chain(1, 1), "a" * 32), *in_epoch(chain(2, 2), "b" * 32)]
    resp = await client.post("/v1/audit", json={"events": events}, headers=auth)
    assert resp.status == 400
    assert "one journal epoch" in (await resp.json())["detail"]


async def test_masked_id_must_have_the_mask_shape(client: TestClient, auth: dict[str, str]) -> None:
    for bad in ("*", "1101*4514", "********", "1101**********45"):
        event = chain(1, 1)[0]
        event["masked_id"] = bad
        event["hash"] = event_hash(event)
        resp = await client.post("/v1/audit", json={"events": [event]}, headers=auth)
        assert resp.status == 400, bad
        assert (await resp.json())["detail"].startswith("events[0].masked_id: ")
    event = chain(1, 1)[0]
    event["masked_id"] = "USA1*******0030"
    event["hash"] = event_hash(event)
    assert (await post(client, auth, [event]))["stored"] == 1


def device_state(db_path: Path, device_id: str) -> dict[str, Any]:
    with connect(db_path) as conn:
        cur = conn.execute("SELECT * FROM audit_device_state WHERE device_id = ?", (device_id,))
        row = cur.fetchone()
        names = [d[0] for d in cur.description]
    return dict(zip(names, row, strict=True)) if row else {}


async def test_conflicts_and_breaks_are_kept_as_state_for_alerts(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, db_path: Path
) -> None:
    from server.audit.state import alerts

    await post(client, auth, chain(1, 3))
    assert device_state(db_path, device.device_id) == {}  # a clean batch leaves no trace
    changed = chain(1, 3)
    changed[1]["outcome"] = "check"
    changed[1]["hash"] = event_hash(changed[1])
    await post(client, auth, changed[1:2])
    state = device_state(db_path, device.device_id)
    assert (state["conflicts"], state["chain_breaks"], state["lost"]) == (1, 1, 0)
    assert state["last_problem_at"] is not None
    with connect(db_path) as conn:
        listed = alerts(conn)
    assert [(a["device_id"], a["conflicts"]) for a in listed] == [(device.device_id, 1)]


async def test_reported_losses_are_counted_against_what_the_server_lacks(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, db_path: Path
) -> None:
    old = in_epoch(chain(1, 6), "a" * 32)
    await post(client, auth, [*old[:4], old[5]])  # 6 went straight from memory; 5 died
    notice = {
        **chain(1, 1)[0],
        "kind": "system",
        "outcome": None,
        "prompt": None,
        "masked_id": None,
        "pseudonym": None,
        "detail": {
            "event": "journal_epoch_started",
            "previous_epoch": "a" * 32,
            "unconfirmed_from": 5,
            "unconfirmed_to": 6,
            "dropped": 2,
        },
    }
    new = in_epoch([notice], "b" * 32)
    await post(client, auth, new)
    await post(client, auth, new)  # a resend counts nothing twice
    assert device_state(db_path, device.device_id)["lost"] == 3  # seq 5, and 2 dropped
    with connect(db_path) as conn:
        rows = conn.execute(
            "SELECT lost_epoch, first_seq, last_seq, missing, dropped FROM audit_losses"
        ).fetchall()
    assert rows == [("a" * 32, 5, 6, 1, 2)]


async def test_a_revoked_kiosk_still_hands_in_its_events_flagged(
    aiohttp_client: Any, config: Any, device: DeviceBundle, db_path: Path
) -> None:
    from dataclasses import replace

    from provisioning.registry import revoke_device
    from server.app import create_app
    from server.config import IdentitySettings

    client = await aiohttp_client(
        create_app(replace(config, identity=IdentitySettings(status_sync_s=0)))
    )
    auth = bearer(db_path, device)
    await post(client, auth, chain(1, 2))
    revoke_device(local_fleet(None, db_path), device.serial)
    pending = chain(1, 4)[2:]
    pending[0]["prev_hash"] = chain(1, 2)[1]["hash"]
    pending = [pending[0] | {"hash": event_hash(pending[0])}]
    answer = await post(client, auth, pending)
    assert (answer["acked_seq"], answer["stored"]) == (3, 1)
    with connect(db_path) as conn:
        flags = conn.execute("SELECT seq, flagged FROM audit_events ORDER BY seq").fetchall()
    assert flags == [(1, None), (2, None), (3, "revoked")]
    assert device_state(db_path, device.device_id)["flagged"] == 1
    resp = await client.post("/v1/heartbeat", json={"boot_id": "b"}, headers=auth)
    assert resp.status == 403  # nothing but the audit is open to it


def test_migration_7_keeps_existing_audit_rows(tmp_path: Path) -> None:
    from server.storage.db import load_migrations, migrate

    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    migrations = load_migrations()
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version in range(1, 7):
        for statement in migrations[version]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    conn.execute(
        "INSERT INTO audit_events (device_id, seq, wall_time, received_at, kind, offline,"
        " boot_id, mono_ns, clock_trusted, detail, prev_hash, hash, chain_ok)"
        " VALUES ('k1', 1, 't', 't', 'decision', 0, 'b', 1, 1, '{}', ?, 'h1', 1)",
        (GENESIS,),
    )
    conn.execute("INSERT INTO audit_progress VALUES ('k1', 1)")
    assert migrate(conn) >= 7
    assert conn.execute(
        "SELECT device_id, epoch, seq, hash, flagged FROM audit_events"
    ).fetchall() == [("k1", "", 1, "h1", None)]
    assert conn.execute(
        "SELECT device_id, epoch, acked_seq, acked_hash FROM audit_progress"
    ).fetchall() == [("k1", "", 1, "h1")]  # migration 10 keeps the tip's hash
    conn.close()
