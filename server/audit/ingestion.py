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
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core import audit
from core.outcomes import ALL_OUTCOMES
from server.errors import BadRequest
from server.http import validation as v
from server.storage.db import durable

log = logging.getLogger(__name__)

MAX_EVENTS = 500
MAX_DETAIL_BYTES = 4096
GENESIS_HASH = audit.GENESIS_HASH
KINDS = audit.KINDS
OUTCOMES = ALL_OUTCOMES

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{1,128}")
_MASKED = re.compile(r"[0-9A-Za-z*]{1,32}")


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


def parse_event(raw: Any, index: int) -> AuditEvent:
    """Validate one event of a batch; ``index`` names it in errors."""
    if not isinstance(raw, dict):
        raise BadRequest(f"events[{index}]: must be an object")
    at = f"events[{index}]."
    # Privacy first: no string anywhere in the event (keys included) may be a clear ID.
    v.refuse_clear_ids(raw, f"events[{index}]")
    masked = v.string(raw, "masked_id", where=at, pattern=_MASKED, required=False, nullable=True)
    if masked is not None and "*" not in masked and len(masked) > 8:
        raise BadRequest(f"{at}masked_id: must be masked, never a clear ID number")
    detail = v.obj(raw, "detail", where=at, required=False) or {}
    try:
        detail_json = json.dumps(detail, sort_keys=True, ensure_ascii=False)
    except (ValueError, RecursionError) as exc:  # e.g. nested too deep
        raise BadRequest(f"{at}detail: not serialisable") from exc
    if len(detail_json.encode("utf-8")) > MAX_DETAIL_BYTES:
        raise BadRequest(f"{at}detail: larger than {MAX_DETAIL_BYTES} bytes")
    kind = v.req_string(raw, "kind", where=at, max_len=16)
    if kind not in KINDS:
        raise BadRequest(f"{at}kind: must be one of {sorted(KINDS)}")
    outcome = v.string(raw, "outcome", where=at, max_len=32, required=False, nullable=True)
    if outcome is not None and outcome not in OUTCOMES:
        raise BadRequest(f"{at}outcome: must be null or one of {sorted(OUTCOMES)}")
    wall_time = v.req_string(raw, "wall_time", where=at, max_len=64)
    if not _is_aware_timestamp(wall_time):
        raise BadRequest(f"{at}wall_time: must be an ISO 8601 timestamp with a UTC offset")
    hash_ = v.req_string(raw, "hash", where=at, pattern=_HEX64)
    try:
        recomputed = audit.hash_event(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"{at}: not serialisable") from exc
    return AuditEvent(
        seq=v.req_integer(raw, "seq", where=at, lo=1),
        wall_time=wall_time,
        mono_ns=v.req_integer(raw, "mono_ns", where=at, lo=0),
        boot_id=v.req_string(raw, "boot_id", where=at, min_len=1, max_len=64),
        clock_trusted=v.boolean(raw, "clock_trusted", where=at),
        kind=kind,
        outcome=outcome,
        prompt=v.string(raw, "prompt", where=at, max_len=200, required=False, nullable=True),
        masked_id=masked,
        pseudonym=v.string(raw, "pseudonym", where=at, pattern=_HEX, required=False, nullable=True),
        offline=v.boolean(raw, "offline", where=at),
        cache_age_s=v.number(raw, "cache_age_s", where=at),
        latency_ms=v.number(raw, "latency_ms", where=at),
        detail_json=detail_json,
        prev_hash=v.req_string(raw, "prev_hash", where=at, pattern=_HEX64),
        hash=hash_,
        hash_ok=recomputed == hash_,
    )


def _is_aware_timestamp(text: str) -> bool:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return False
    return parsed.tzinfo is not None and parsed.utcoffset() is not None


def parse_batch(body: Mapping[str, Any]) -> list[AuditEvent]:
    """Validate a ``POST /v1/audit`` body: 1..500 events in strictly ascending ``seq``."""
    raw_events = v.array(body, "events", lo=1, hi=MAX_EVENTS)
    events = [parse_event(raw, i) for i, raw in enumerate(raw_events)]
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
    lo, hi = events[0].seq - 1, events[-1].seq + 1
    stored = 0
    duplicates = 0
    breaks: list[int] = []
    conflicts: list[int] = []
    with durable(conn):
        known = {
            row[0]: _Stored(row[1], row[2], row[3])
            for row in conn.execute(
                "SELECT seq, hash, prev_hash, chain_ok FROM audit_events"
                " WHERE device_id = ? AND seq BETWEEN ? AND ?",
                (device_id, lo, hi),
            )
        }
        new_seqs: list[int] = []
        for ev in events:
            before = known.get(ev.seq)
            if before is None:
                chain_ok = _chain_ok(ev, known)
                cursor = conn.execute(_INSERT, _row(device_id, ev, received_at, chain_ok))
                if cursor.rowcount == 1:
                    stored += 1
                    new_seqs.append(ev.seq)
                    known[ev.seq] = _Stored(ev.hash, ev.prev_hash, chain_ok)
                    if chain_ok == 0:
                        breaks.append(ev.seq)
                    continue
                # stored meanwhile by another server process: compare with that version
                existing_hash = _stored_hash(conn, device_id, ev.seq)
            else:
                existing_hash = before.hash
            if existing_hash == ev.hash:
                duplicates += 1
                continue
            cursor = conn.execute(
                _INSERT_CONFLICT, _row(device_id, ev, received_at, int(ev.hash_ok))
            )
            if cursor.rowcount == 0:  # this very conflicting version was stored before
                duplicates += 1
                continue
            stored += 1
            conflicts.append(ev.seq)
            breaks.append(ev.seq)
        # A new event may be the missing predecessor of one stored earlier: verify that link.
        for seq in new_seqs:
            successor = known.get(seq + 1)
            if successor is not None and successor.chain_ok is None:
                ok = int(successor.prev_hash == known[seq].hash)
                successor.chain_ok = ok
                conn.execute(
                    "UPDATE audit_events SET chain_ok = ? WHERE device_id = ? AND seq = ?",
                    (ok, device_id, seq + 1),
                )
                if not ok:
                    breaks.append(seq + 1)
        acked = _advance_acked(conn, device_id)
    if conflicts:
        log.warning(
            "device %s sent %d event(s) whose seq is already stored with a different hash"
            " (journal reset?); kept in audit_conflicts: seq %d..%d",
            device_id,
            len(conflicts),
            conflicts[0],
            conflicts[-1],
        )
    if breaks:
        log.warning("device %s audit chain breaks at seq %s", device_id, sorted(set(breaks)))
    return IngestResult(acked, stored, duplicates, tuple(sorted(set(breaks))), tuple(conflicts))


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
