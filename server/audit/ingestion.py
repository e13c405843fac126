"""Audit ingestion: validate, hash-check and store a batch of kiosk journal events.

Storage is idempotent on (device_id, seq); each event's ``hash`` is recomputed from its
canonical JSON and its ``prev_hash`` compared with the stored event seq-1. Broken links are
stored but flagged (``chain_ok = 0``) and reported. ``acked_seq`` is the device's high-water
mark: every event 1..acked_seq is stored.
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core import audit, wire
from server.errors import BadRequest
from server.http.bodies import convert, refuse_clear_ids
from server.storage.db import durable

log = logging.getLogger(__name__)

MAX_EVENTS = wire.MAX_EVENTS
MAX_DETAIL_BYTES = 4096
GENESIS_HASH = audit.GENESIS_HASH


@dataclass(frozen=True)
class AuditEvent:
    """One validated journal event as it will be stored."""

    seq: int
    wall_time: str
    mono_ns: int
    boot_id: str
    clock_trusted: bool
    kind: str
    outcome: str | None
    prompt: str | None
    masked_id: str | None
    pseudonym: str | None
    offline: bool
    cache_age_s: float | None
    latency_ms: float | None
    detail_json: str
    prev_hash: str
    hash: str
    hash_ok: bool


@dataclass(frozen=True)
class IngestResult:
    """The answer to one batch."""

    acked_seq: int
    stored: int
    duplicates: int
    chain_breaks: tuple[int, ...]
    conflicts: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Render as the ``POST /v1/audit`` response body."""
        return {
            "acked_seq": self.acked_seq,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "chain_breaks": list(self.chain_breaks),
            "conflicts": list(self.conflicts),
        }


def parse_event(raw: dict[str, Any], typed: wire.AuditEventIn, index: int) -> AuditEvent:
    """One event of a batch as it will be stored: ``raw`` is hashed, ``typed`` checked."""
    try:
        detail_json = json.dumps(typed.detail or {}, sort_keys=True, ensure_ascii=False)
        recomputed = audit.hash_event(raw)
    except (ValueError, RecursionError) as exc:  # e.g. nested deeper than json can write
        raise BadRequest(f"events[{index}]: not serialisable") from exc
    if len(detail_json.encode("utf-8")) > MAX_DETAIL_BYTES:
        raise BadRequest(f"events[{index}].detail: larger than {MAX_DETAIL_BYTES} bytes")
    return AuditEvent(
        seq=typed.seq,
        wall_time=typed.wall_time,
        mono_ns=typed.mono_ns,
        boot_id=typed.boot_id,
        clock_trusted=typed.clock_trusted,
        kind=typed.kind,
        outcome=typed.outcome,
        prompt=typed.prompt,
        masked_id=typed.masked_id,
        pseudonym=typed.pseudonym,
        offline=typed.offline,
        cache_age_s=typed.cache_age_s,
        latency_ms=typed.latency_ms,
        detail_json=detail_json,
        prev_hash=typed.prev_hash,
        hash=typed.hash,
        hash_ok=recomputed == typed.hash,
    )


def parse_batch(body: dict[str, Any]) -> list[AuditEvent]:
    """Validate a ``POST /v1/audit`` body: 1..500 events in strictly ascending ``seq``.

    Privacy first: every event as sent (unknown fields and keys included) is searched for a
    clear ID number before any field is checked, so no error message can quote one.
    """
    raw_events = body.get("events")
    if isinstance(raw_events, list):
        for i, raw in enumerate(raw_events):
            refuse_clear_ids(raw, f"events[{i}]", audit.COUNTER_FIELDS)
    batch = convert(body, wire.AuditBatch)
    assert isinstance(raw_events, list)  # the model accepted it as the list of events
    events = [
        parse_event(raw, typed, i)
        for i, (raw, typed) in enumerate(zip(raw_events, batch.events, strict=True))
    ]
    for before, after in itertools.pairwise(events):
        if after.seq <= before.seq:
            raise BadRequest(f"events: seq must be strictly ascending ({before.seq}, {after.seq})")
    return events


_INSERT = (
    "INSERT INTO audit_events (device_id, seq, wall_time, received_at, kind, outcome, prompt,"
    " masked_id, pseudonym, offline, cache_age_s, latency_ms, boot_id, mono_ns, clock_trusted,"
    " detail, prev_hash, hash, chain_ok)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id, seq) DO NOTHING"
)


_INSERT_CONFLICT = (
    "INSERT INTO audit_conflicts (device_id, seq, received_at, wall_time, kind, outcome, prompt,"
    " masked_id, pseudonym, offline, cache_age_s, latency_ms, boot_id, mono_ns, clock_trusted,"
    " detail, prev_hash, hash, hash_ok)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id, seq, hash) DO NOTHING"
)


@dataclass
class _Stored:
    hash: str
    prev_hash: str
    chain_ok: int | None


def _row(device_id: str, ev: AuditEvent, received_at: str, last: int | None) -> tuple[Any, ...]:
    return (
        device_id, ev.seq, ev.wall_time, received_at, ev.kind, ev.outcome, ev.prompt,
        ev.masked_id, ev.pseudonym, int(ev.offline), ev.cache_age_s, ev.latency_ms,
        ev.boot_id, ev.mono_ns, int(ev.clock_trusted), ev.detail_json, ev.prev_hash,
        ev.hash, last,
    )  # fmt: skip


def _stored_hash(conn: sqlite3.Connection, device_id: str, seq: int) -> str:
    row = conn.execute(
        "SELECT hash FROM audit_events WHERE device_id = ? AND seq = ?", (device_id, seq)
    ).fetchone()
    return str(row[0])


@dataclass
class _Tally:
    """What one batch did so far, event by event."""

    stored: int = 0
    duplicates: int = 0
    breaks: list[int] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)
    new_seqs: list[int] = field(default_factory=list)


def ingest(
    conn: sqlite3.Connection, device_id: str, events: Sequence[AuditEvent], received_at: str
) -> IngestResult:
    """Store a validated batch in one durable transaction and compute the acknowledgement.

    An event whose seq is already stored with the same hash is a duplicate (a resend). One
    whose seq is stored with a *different* hash (e.g. a kiosk whose journal was reset and
    starts again at seq 1) is a conflict: it is stored in full in ``audit_conflicts`` — so
    the kiosk may delete it once acknowledged — and reported in ``conflicts`` and
    ``chain_breaks``; the first version stays in ``audit_events``.
    """
    tally = _Tally()
    with durable(conn):
        known = _known(conn, device_id, events[0].seq - 1, events[-1].seq + 1)
        for ev in events:
            _store(conn, device_id, ev, received_at, known, tally)
        _check_successors(conn, device_id, known, tally)
        acked = _advance_acked(conn, device_id)
    _log_trouble(device_id, tally)
    breaks = tuple(sorted(set(tally.breaks)))
    return IngestResult(acked, tally.stored, tally.duplicates, breaks, tuple(tally.conflicts))


def _known(conn: sqlite3.Connection, device_id: str, lo: int, hi: int) -> dict[int, _Stored]:
    """The device's stored events around the batch: its seqs and their neighbours."""
    return {
        row[0]: _Stored(row[1], row[2], row[3])
        for row in conn.execute(
            "SELECT seq, hash, prev_hash, chain_ok FROM audit_events"
            " WHERE device_id = ? AND seq BETWEEN ? AND ?",
            (device_id, lo, hi),
        )
    }


def _store(
    conn: sqlite3.Connection,
    device_id: str,
    ev: AuditEvent,
    received_at: str,
    known: dict[int, _Stored],
    tally: _Tally,
) -> None:
    """Store one event as new, count it as a duplicate or keep it apart as a conflict."""
    before = known.get(ev.seq)
    if before is None:
        chain_ok = _chain_ok(ev, known)
        cursor = conn.execute(_INSERT, _row(device_id, ev, received_at, chain_ok))
        if cursor.rowcount == 1:
            tally.stored += 1
            tally.new_seqs.append(ev.seq)
            known[ev.seq] = _Stored(ev.hash, ev.prev_hash, chain_ok)
            if chain_ok == 0:
                tally.breaks.append(ev.seq)
            return
        # stored meanwhile by another server process: compare with that version
        existing_hash = _stored_hash(conn, device_id, ev.seq)
    else:
        existing_hash = before.hash
    if existing_hash == ev.hash:
        tally.duplicates += 1
        return
    cursor = conn.execute(_INSERT_CONFLICT, _row(device_id, ev, received_at, int(ev.hash_ok)))
    if cursor.rowcount == 0:  # this very conflicting version was stored before
        tally.duplicates += 1
        return
    tally.stored += 1
    tally.conflicts.append(ev.seq)
    tally.breaks.append(ev.seq)


def _check_successors(
    conn: sqlite3.Connection, device_id: str, known: dict[int, _Stored], tally: _Tally
) -> None:
    """A new event may be the missing predecessor of one stored earlier: verify that link."""
    for seq in tally.new_seqs:
        successor = known.get(seq + 1)
        if successor is None or successor.chain_ok is not None:
            continue
        ok = int(successor.prev_hash == known[seq].hash)
        successor.chain_ok = ok
        conn.execute(
            "UPDATE audit_events SET chain_ok = ? WHERE device_id = ? AND seq = ?",
            (ok, device_id, seq + 1),
        )
        if not ok:
            tally.breaks.append(seq + 1)


def _log_trouble(device_id: str, tally: _Tally) -> None:
    if tally.conflicts:
        log.warning(
            "device %s sent %d event(s) whose seq is already stored with a different hash"
            " (journal reset?); kept in audit_conflicts: seq %d..%d",
            device_id,
            len(tally.conflicts),
            tally.conflicts[0],
            tally.conflicts[-1],
        )
    if tally.breaks:
        log.warning("device %s audit chain breaks at seq %s", device_id, sorted(set(tally.breaks)))


def _chain_ok(ev: AuditEvent, known: Mapping[int, _Stored]) -> int | None:
    if not ev.hash_ok:
        return 0
    if ev.seq == 1:
        return int(ev.prev_hash == GENESIS_HASH)
    previous = known.get(ev.seq - 1)
    if previous is None:
        return None  # predecessor not received yet; checked when it arrives
    return int(ev.prev_hash == previous.hash)


def _advance_acked(conn: sqlite3.Connection, device_id: str) -> int:
    row = conn.execute(
        "SELECT acked_seq FROM audit_progress WHERE device_id = ?", (device_id,)
    ).fetchone()
    start = acked = int(row[0]) if row else 0
    while True:
        seqs = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM audit_events WHERE device_id = ? AND seq > ?"
                " ORDER BY seq LIMIT 1000",
                (device_id, acked),
            )
        ]
        for seq in seqs:
            if seq != acked + 1:
                break
            acked = seq
        else:
            if len(seqs) == 1000:
                continue
        break
    if row is None or acked != start:
        conn.execute(
            "INSERT INTO audit_progress (device_id, acked_seq) VALUES (?, ?)"
            " ON CONFLICT (device_id) DO UPDATE SET acked_seq = excluded.acked_seq",
            (device_id, acked),
        )
    return acked
