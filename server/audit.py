"""Audit ingestion: validate, hash-check and store a batch of kiosk journal events.

Storage is idempotent on (device_id, seq); each event's ``hash`` is recomputed from its
canonical JSON and its ``prev_hash`` compared with the stored event seq-1. Broken links are
stored but flagged (``chain_ok = 0``) and reported. ``acked_seq`` is the device's high-water
mark: every event 1..acked_seq is stored.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server import validation as v
from server.db import durable
from server.errors import BadRequest

log = logging.getLogger(__name__)

MAX_EVENTS = 500
MAX_DETAIL_BYTES = 4096
GENESIS_HASH = "0" * 64
KINDS = frozenset({"decision", "fault", "guard", "system"})

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{1,128}")
_MASKED = re.compile(r"[0-9A-Za-z*]{1,32}")
_SHORT = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# An 18-character ID number standing alone (not part of a longer hex string or word).
_CLEAR_ID = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")


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

    def to_json(self) -> dict[str, Any]:
        """Render as the ``POST /v1/audit`` response body."""
        return {
            "acked_seq": self.acked_seq,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "chain_breaks": list(self.chain_breaks),
        }


def canonical_hash(event: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``event`` without its ``hash`` field."""
    body = {k: val for k, val in event.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_event(raw: Any, index: int) -> AuditEvent:
    """Validate one event of a batch; ``index`` names it in errors."""
    if not isinstance(raw, dict):
        raise BadRequest(f"events[{index}]: must be an object")
    at = f"events[{index}]."
    masked = v.string(raw, "masked_id", where=at, pattern=_MASKED, required=False, nullable=True)
    if masked is not None and "*" not in masked and len(masked) > 8:
        raise BadRequest(f"{at}masked_id: must be masked, never a clear ID number")
    detail = v.obj(raw, "detail", where=at, required=False) or {}
    try:
        detail_json = json.dumps(detail, sort_keys=True, ensure_ascii=False)
    except ValueError as exc:  # e.g. nested too deep
        raise BadRequest(f"{at}detail: not serialisable") from exc
    if len(detail_json.encode("utf-8")) > MAX_DETAIL_BYTES:
        raise BadRequest(f"{at}detail: larger than {MAX_DETAIL_BYTES} bytes")
    if _CLEAR_ID.search(detail_json):
        raise BadRequest(f"{at}detail: contains what looks like a clear ID number")
    kind = v.req_string(raw, "kind", where=at, max_len=16)
    if kind not in KINDS:
        raise BadRequest(f"{at}kind: must be one of {sorted(KINDS)}")
    hash_ = v.req_string(raw, "hash", where=at, pattern=_HEX64)
    try:
        recomputed = canonical_hash(raw)
    except ValueError as exc:
        raise BadRequest(f"{at}: not serialisable") from exc
    return AuditEvent(
        seq=v.req_integer(raw, "seq", where=at, lo=1),
        wall_time=v.req_string(raw, "wall_time", where=at, max_len=64),
        mono_ns=v.req_integer(raw, "mono_ns", where=at, lo=0),
        boot_id=v.req_string(raw, "boot_id", where=at, min_len=1, max_len=64),
        clock_trusted=v.boolean(raw, "clock_trusted", where=at),
        kind=kind,
        outcome=v.string(raw, "outcome", where=at, pattern=_SHORT, required=False, nullable=True),
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


@dataclass
class _Stored:
    hash: str
    prev_hash: str
    chain_ok: int | None


def ingest(
    conn: sqlite3.Connection, device_id: str, events: Sequence[AuditEvent], received_at: str
) -> IngestResult:
    """Store a validated batch in one durable transaction and compute the acknowledgement."""
    lo, hi = events[0].seq - 1, events[-1].seq + 1
    stored = 0
    duplicates = 0
    breaks: list[int] = []
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
            if before is not None:
                duplicates += 1
                if before.hash != ev.hash:
                    log.warning("device %s resent seq %d with a different hash", device_id, ev.seq)
                    breaks.append(ev.seq)
                continue
            chain_ok = _chain_ok(ev, known)
            cursor = conn.execute(
                _INSERT,
                (
                    device_id, ev.seq, ev.wall_time, received_at, ev.kind, ev.outcome, ev.prompt,
                    ev.masked_id, ev.pseudonym, int(ev.offline), ev.cache_age_s, ev.latency_ms,
                    ev.boot_id, ev.mono_ns, int(ev.clock_trusted), ev.detail_json, ev.prev_hash,
                    ev.hash, chain_ok,
                ),
            )  # fmt: skip
            if cursor.rowcount == 0:  # stored meanwhile by another server process
                duplicates += 1
                continue
            stored += 1
            new_seqs.append(ev.seq)
            known[ev.seq] = _Stored(ev.hash, ev.prev_hash, chain_ok)
            if chain_ok == 0:
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
    if breaks:
        log.warning("device %s audit chain breaks at seq %s", device_id, sorted(set(breaks)))
    return IngestResult(acked, stored, duplicates, tuple(sorted(set(breaks))))


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
