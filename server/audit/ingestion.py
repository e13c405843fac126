"""Audit ingestion: validate, hash-check and store a batch of kiosk journal events.

Storage is idempotent on (device_id, epoch, seq): the epoch is the kiosk journal's random id,
so a kiosk whose journal starts again (new SD card, wipe, demo) never collides with its own
past; events of journals made before epochs have epoch ``""``. Each event's ``hash`` is
recomputed from its canonical JSON and its ``prev_hash`` compared with the stored event
seq-1 of the same epoch. Broken links are stored but flagged (``chain_ok = 0``) and
reported. ``acked_seq`` is the epoch's high-water mark (every event 1..acked_seq is stored);
``held`` names the batch's events the server now holds, so a kiosk can forget events past a
hole (an event it had to dead-letter) instead of sending them for ever.

Events of a revoked or quarantined kiosk are stored with ``flagged`` set to that status, so
revoking a kiosk does not erase what it saw; nothing else may trust them. Conflicts, chain
breaks, flagged events and the losses a kiosk reports are counted in ``audit_device_state``,
the state alerts are raised from (server.audit.state).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from core import audit, wire
from server.audit import state
from server.errors import BadRequest
from server.http.bodies import convert, refuse_clear_ids
from server.storage.connection import Connection
from server.storage.db import durable

log = logging.getLogger(__name__)

MAX_EVENTS = wire.MAX_EVENTS
MAX_DETAIL_BYTES = 4096


@dataclass(frozen=True)
class AuditEvent:
    """One validated journal event as it will be stored."""

    epoch: str
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

    @property
    def reported_loss(self) -> dict[str, Any] | None:
        """The kiosk's own report of events it lost (a system event), if this is one."""
        if self.kind != "system":
            return None
        detail = json.loads(self.detail_json)
        if detail.get("event") in ("journal_epoch_started", "events_lost"):
            return dict(detail)
        return None


@dataclass(frozen=True)
class IngestResult:
    """The answer to one batch."""

    acked_seq: int
    stored: int
    duplicates: int
    chain_breaks: tuple[int, ...]
    conflicts: tuple[int, ...] = ()
    held: tuple[tuple[int, int], ...] = ()
    epoch: str = ""

    def to_json(self) -> dict[str, Any]:
        """Render as the ``POST /v1/audit`` response body."""
        return {
            "acked_seq": self.acked_seq,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "chain_breaks": list(self.chain_breaks),
            "conflicts": list(self.conflicts),
            "held": [list(pair) for pair in self.held],
            "epoch": self.epoch,
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
        epoch="" if isinstance(typed.epoch, msgspec.UnsetType) else typed.epoch,
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
        if after.epoch != before.epoch:
            raise BadRequest("events: one journal epoch per batch")
        if after.seq <= before.seq:
            raise BadRequest(f"events: seq must be strictly ascending ({before.seq}, {after.seq})")
    return events


_COLUMNS = (
    "device_id, epoch, seq, wall_time, received_at, kind, outcome, prompt, masked_id,"
    " pseudonym, offline, cache_age_s, latency_ms, boot_id, mono_ns, clock_trusted, detail,"
    " prev_hash, hash"
)
_INSERT = (
    f"INSERT INTO audit_events ({_COLUMNS}, chain_ok, flagged)"
    f" VALUES ({', '.join(['?'] * 21)})"
    " ON CONFLICT (device_id, epoch, seq) DO NOTHING"
)
_INSERT_CONFLICT = (
    f"INSERT INTO audit_conflicts ({_COLUMNS}, hash_ok, flagged)"
    f" VALUES ({', '.join(['?'] * 21)})"
    " ON CONFLICT (device_id, epoch, seq, hash) DO NOTHING"
)


@dataclass
class _Stored:
    hash: str
    prev_hash: str
    chain_ok: int | None


@dataclass
class _Batch:
    """One batch being stored: where it goes, and what it did so far, event by event."""

    conn: Connection
    device_id: str
    epoch: str
    received_at: str
    flagged: str | None
    known: dict[int, _Stored] = field(default_factory=dict)
    stored: int = 0
    duplicates: int = 0
    breaks: list[int] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)
    new_seqs: list[int] = field(default_factory=list)
    lost: int = 0

    def row(self, ev: AuditEvent, last: int | None) -> tuple[Any, ...]:
        return (
            self.device_id, self.epoch, ev.seq, ev.wall_time, self.received_at, ev.kind,
            ev.outcome, ev.prompt, ev.masked_id, ev.pseudonym, int(ev.offline), ev.cache_age_s,
            ev.latency_ms, ev.boot_id, ev.mono_ns, int(ev.clock_trusted), ev.detail_json,
            ev.prev_hash, ev.hash, last, self.flagged,
        )  # fmt: skip


def ingest(
    conn: Connection, device_id: str, events: Sequence[AuditEvent], received_at: str
) -> IngestResult:
    """Store a validated batch in one durable transaction and compute the acknowledgement.

    An event whose (epoch, seq) is already stored with the same hash is a duplicate (a
    resend). One stored with a *different* hash is a conflict: it is stored in full in
    ``audit_conflicts`` — so the kiosk may delete it once acknowledged — and reported in
    ``conflicts`` and ``chain_breaks``; the first version stays in ``audit_events``.
    """
    epoch = events[0].epoch
    with durable(conn):
        batch = _Batch(conn, device_id, epoch, received_at, _device_flag(conn, device_id))
        batch.known = _known(batch, events[0].seq - 1, events[-1].seq + 1)
        for ev in events:
            _store(batch, ev)
        _check_successors(batch)
        acked = _advance_acked(conn, device_id, epoch)
        state.count_ingest(conn, device_id, received_at, _counts(batch))
    _log_trouble(batch)
    breaks = tuple(sorted(set(batch.breaks)))
    held = _ranges([ev.seq for ev in events])
    return IngestResult(
        acked, batch.stored, batch.duplicates, breaks, tuple(batch.conflicts), held, epoch
    )


def _device_flag(conn: Connection, device_id: str) -> str | None:
    """The status a non-active device's events are flagged with (revoked, quarantined)."""
    row = conn.execute("SELECT status FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    return None if row is None or row[0] == "active" else str(row[0])


def _counts(batch: _Batch) -> state.Counts:
    return state.Counts(
        conflicts=len(batch.conflicts),
        chain_breaks=len(set(batch.breaks)),
        lost=batch.lost,
        flagged=batch.stored if batch.flagged else 0,
    )


def _ranges(seqs: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Ascending numbers as ``(first, last)`` runs: a batch is usually one run."""
    runs: list[tuple[int, int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return tuple(runs)


def _known(batch: _Batch, lo: int, hi: int) -> dict[int, _Stored]:
    """The epoch's stored events around the batch: its seqs and their neighbours."""
    return {
        row[0]: _Stored(row[1], row[2], row[3])
        for row in batch.conn.execute(
            "SELECT seq, hash, prev_hash, chain_ok FROM audit_events"
            " WHERE device_id = ? AND epoch = ? AND seq BETWEEN ? AND ?",
            (batch.device_id, batch.epoch, lo, hi),
        )
    }


def _store(batch: _Batch, ev: AuditEvent) -> None:
    """Store one event as new, count it as a duplicate or keep it apart as a conflict."""
    conn = batch.conn
    before = batch.known.get(ev.seq)
    if before is None:
        chain_ok = _chain_ok(ev, batch.known)
        if conn.execute(_INSERT, batch.row(ev, chain_ok)).rowcount == 1:
            batch.stored += 1
            batch.new_seqs.append(ev.seq)
            batch.known[ev.seq] = _Stored(ev.hash, ev.prev_hash, chain_ok)
            if chain_ok == 0:
                batch.breaks.append(ev.seq)
            _record_loss(batch, ev)
            return
        # stored meanwhile by another server process: compare with that version
        existing_hash = _stored_hash(batch, ev.seq)
    else:
        existing_hash = before.hash
    if existing_hash == ev.hash:
        batch.duplicates += 1
        return
    if conn.execute(_INSERT_CONFLICT, batch.row(ev, int(ev.hash_ok))).rowcount == 0:
        batch.duplicates += 1  # this very conflicting version was stored before
        return
    batch.stored += 1
    batch.conflicts.append(ev.seq)
    batch.breaks.append(ev.seq)


def _stored_hash(batch: _Batch, seq: int) -> str:
    row = batch.conn.execute(
        "SELECT hash FROM audit_events WHERE device_id = ? AND epoch = ? AND seq = ?",
        (batch.device_id, batch.epoch, seq),
    ).fetchone()
    return str(row[0])


def _record_loss(batch: _Batch, ev: AuditEvent) -> None:
    """A kiosk's report of lost events, counted against what this server actually lacks."""
    report = ev.reported_loss
    if report is None:
        return
    dropped = _int(report.get("dropped", 0)) + _int(report.get("count", 0))
    lost_epoch, first, last = batch.epoch, None, None
    missing = 0
    if report.get("event") == "journal_epoch_started":
        lost_epoch = str(report.get("previous_epoch", ""))[:64]
        first, last = _int(report.get("unconfirmed_from")), _int(report.get("unconfirmed_to"))
        if 0 < first <= last:
            (have,) = batch.conn.execute(
                "SELECT count(*) FROM audit_events"
                " WHERE device_id = ? AND epoch = ? AND seq BETWEEN ? AND ?",
                (batch.device_id, lost_epoch, first, last),
            ).fetchone()
            missing = last - first + 1 - int(have)
    batch.conn.execute(
        "INSERT INTO audit_losses (device_id, epoch, seq, lost_epoch, first_seq, last_seq,"
        " missing, dropped, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (device_id, epoch, seq) DO NOTHING",
        (batch.device_id, batch.epoch, ev.seq, lost_epoch, first, last, missing, dropped,
         batch.received_at),
    )  # fmt: skip
    batch.lost += missing + dropped


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _check_successors(batch: _Batch) -> None:
    """A new event may be the missing predecessor of one stored earlier: verify that link."""
    for seq in batch.new_seqs:
        successor = batch.known.get(seq + 1)
        if successor is None or successor.chain_ok is not None:
            continue
        ok = int(successor.prev_hash == batch.known[seq].hash)
        successor.chain_ok = ok
        batch.conn.execute(
            "UPDATE audit_events SET chain_ok = ? WHERE device_id = ? AND epoch = ? AND seq = ?",
            (ok, batch.device_id, batch.epoch, seq + 1),
        )
        if not ok:
            batch.breaks.append(seq + 1)


def _log_trouble(batch: _Batch) -> None:
    where = f"device {batch.device_id} epoch {batch.epoch or '(legacy)'}"
    if batch.conflicts:
        log.warning(
            "%s sent %d event(s) whose seq is already stored with a different hash;"
            " kept in audit_conflicts: seq %d..%d",
            where, len(batch.conflicts), batch.conflicts[0], batch.conflicts[-1],
        )  # fmt: skip
    if batch.breaks:
        log.warning("%s audit chain breaks at seq %s", where, sorted(set(batch.breaks)))
    if batch.lost:
        log.warning("%s reports %d audit event(s) lost", where, batch.lost)
    if batch.flagged and batch.stored:
        log.warning("%s is %s: %d event(s) stored flagged", where, batch.flagged, batch.stored)


def _chain_ok(ev: AuditEvent, known: Mapping[int, _Stored]) -> int | None:
    if not ev.hash_ok:
        return 0
    if ev.seq == 1:
        return int(ev.prev_hash == audit.GENESIS_HASH)
    previous = known.get(ev.seq - 1)
    if previous is None:
        return None  # predecessor not received yet; checked when it arrives
    return int(ev.prev_hash == previous.hash)


def _advance_acked(conn: Connection, device_id: str, epoch: str) -> int:
    row = conn.execute(
        "SELECT acked_seq FROM audit_progress WHERE device_id = ? AND epoch = ?",
        (device_id, epoch),
    ).fetchone()
    start = acked = int(row[0]) if row else 0
    while True:
        seqs = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM audit_events WHERE device_id = ? AND epoch = ? AND seq > ?"
                " ORDER BY seq LIMIT 1000",
                (device_id, epoch, acked),
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
            "INSERT INTO audit_progress (device_id, epoch, acked_seq) VALUES (?, ?, ?)"
            " ON CONFLICT (device_id, epoch) DO UPDATE SET acked_seq = excluded.acked_seq",
            (device_id, epoch, acked),
        )
    return acked
