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

At scale (issue 11, part 4): a batch costs a fixed handful of statements whatever its size:
one read of the epoch's progress, one of its stored events around the batch, one multi-row
``INSERT … ON CONFLICT DO NOTHING RETURNING seq`` for the new events (one more for
conflicting versions, if any) and one write of the progress. Events removed by retention
(server.audit.retention) at or below ``acked_seq`` are acknowledged, never stored again.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec

from core import audit, wire
from server.audit import bulk, partitions, state
from server.errors import BadRequest
from server.http.bodies import convert, refuse_clear_ids
from server.metrics.instruments import count_audit_batch
from server.storage.connection import Connection
from server.storage.db import Database, durable, lock
from server.storage.postgres import PgConnection

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
_EVENT_COLUMNS = f"{_COLUMNS}, chain_ok, flagged, wall_month"
_CONFLICT_COLUMNS = f"{_COLUMNS}, hash_ok, flagged"


@dataclass(slots=True)
class _Stored:
    hash: str
    prev_hash: str
    chain_ok: int | None


@dataclass
class _Batch:
    """One batch being stored: where it goes, what the server held before, what it did."""

    conn: Connection
    device_id: str
    epoch: str
    received_at: str
    flagged: str | None
    #: the epoch's high-water mark before this batch, and the hash of the event there
    acked: int = 0
    acked_hash: str | None = None
    has_progress: bool = False
    #: stored events of the epoch in the window ``lo..hi`` (the batch and its neighbours)
    known: dict[int, _Stored] = field(default_factory=dict)
    lo: int = 0
    hi: int = 0
    stored: int = 0
    duplicates: int = 0
    breaks: list[int] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)
    new_seqs: list[int] = field(default_factory=list)
    lost: int = 0

    def row(self, ev: AuditEvent, last: int | None, *extra: Any) -> tuple[Any, ...]:
        """The event's values in ``_COLUMNS`` order, then ``last`` (chain_ok or hash_ok),
        ``flagged`` and ``extra`` (wall_month for audit_events)."""
        return (
            self.device_id, self.epoch, ev.seq, ev.wall_time, self.received_at, ev.kind,
            ev.outcome, ev.prompt, ev.masked_id, ev.pseudonym, int(ev.offline), ev.cache_age_s,
            ev.latency_ms, ev.boot_id, ev.mono_ns, int(ev.clock_trusted), ev.detail_json,
            ev.prev_hash, ev.hash, last, self.flagged, *extra,
        )  # fmt: skip


def ingest(
    conn: Connection, device_id: str, events: Sequence[AuditEvent], received_at: str
) -> IngestResult:
    """Store a validated batch in one durable transaction and compute the acknowledgement.

    An event whose (epoch, seq) is already stored with the same hash is a duplicate (a
    resend). One stored with a *different* hash is a conflict: it is stored in full in
    ``audit_conflicts`` — so the kiosk may delete it once acknowledged — and reported in
    ``conflicts`` and ``chain_breaks``; the first version stays in ``audit_events``. An event
    at or below the epoch's ``acked_seq`` that is no longer stored was removed by retention
    (server/audit/retention.py): it is acknowledged again as a duplicate, not stored afresh.

    The batch's stored neighbourhood is read once, then new events go in with one multi-row
    statement. The transaction holds a per-device lock (PostgreSQL; SQLite transactions are
    serial already), so two uploads of one kiosk at once, through two server processes,
    cannot both take the same event for new.
    """
    partitions.ensure(conn, received_at)
    with durable(conn):
        batch, acked = _store(conn, device_id, events, received_at)
    _log_trouble(batch)
    return _result(batch, events, acked)


def store(
    conn: Connection, device_id: str, events: Sequence[AuditEvent], received_at: str
) -> IngestResult:
    """:func:`ingest` inside a transaction the caller holds (SQLite's group commit,
    ``Database.write``): nothing is durable before that transaction commits."""
    batch, acked = _store(conn, device_id, events, received_at)
    _log_trouble(batch)
    return _result(batch, events, acked)


async def submit(
    db: Database, device_id: str, events: Sequence[AuditEvent], received_at: str
) -> IngestResult:
    """Store a batch for ``POST /v1/audit``, durably, the cheapest way for the backend.

    SQLite: in a group commit with the other writes queued meanwhile (one WAL sync for all;
    bench/fleet_load.py measured the sync of each upload's own commit as the writer's main
    cost). PostgreSQL: a transaction of its own on a pool thread (several run at once, and a
    group would hold every member's device lock until the last one is stored). The batch's
    outcome is counted for /metrics (server/metrics/instruments.py).
    """
    if db.dialect == "sqlite":
        result = await db.write(store, device_id, events, received_at)
    else:
        result = await db.run(ingest, device_id, events, received_at)
    count_audit_batch(
        result.stored, result.duplicates, len(result.conflicts), len(result.chain_breaks)
    )
    return result


def _store(
    conn: Connection, device_id: str, events: Sequence[AuditEvent], received_at: str
) -> tuple[_Batch, int]:
    batch = _open(conn, device_id, events[0].epoch, received_at, events)
    fresh, conflicting = _sort_out(batch, events)
    conflicting += _store_fresh(batch, fresh)
    _store_conflicts(batch, conflicting)
    _check_successors(batch)
    acked = _advance_acked(batch)
    state.count_ingest(conn, device_id, received_at, _counts(batch))
    return batch, acked


def _result(batch: _Batch, events: Sequence[AuditEvent], acked: int) -> IngestResult:
    breaks = tuple(sorted(set(batch.breaks)))
    held = _ranges([ev.seq for ev in events])
    return IngestResult(
        acked, batch.stored, batch.duplicates, breaks, tuple(batch.conflicts), held, batch.epoch
    )


def _open(
    conn: Connection,
    device_id: str,
    epoch: str,
    received_at: str,
    events: Sequence[AuditEvent],
) -> _Batch:
    """Take the device's lock, then read what the batch needs: the device's status, the
    epoch's progress and its stored events around the batch.

    On PostgreSQL the four statements go in one pipeline (one round trip instead of four:
    most uploads carry an event or two, so round trips are most of their cost); the server
    runs them in order, so the reads still happen under the lock.
    """
    lo, hi = events[0].seq - 1, min(events[-1].seq + 1, wire.MAX_INT)
    with _pipeline(conn):
        lock(conn, f"audit:{device_id}")
        status = conn.execute("SELECT status FROM devices WHERE device_id = ?", (device_id,))
        progress = conn.execute(
            "SELECT acked_seq, acked_hash FROM audit_progress WHERE device_id = ? AND epoch = ?",
            (device_id, epoch),
        )
        stored = conn.execute(
            "SELECT seq, hash, prev_hash, chain_ok FROM audit_events"
            " WHERE device_id = ? AND epoch = ? AND seq BETWEEN ? AND ?",
            (device_id, epoch, lo, hi),
        )
    row = status.fetchone()
    flagged = None if row is None or row[0] == "active" else str(row[0])
    batch = _Batch(conn, device_id, epoch, received_at, flagged, lo=lo, hi=hi)
    row = progress.fetchone()
    if row is not None:
        batch.acked, batch.acked_hash, batch.has_progress = int(row[0]), row[1], True
    batch.known = {r[0]: _Stored(r[1], r[2], r[3]) for r in stored.fetchall()}
    return batch


@contextmanager
def _pipeline(conn: Connection) -> Iterator[None]:
    """psycopg's pipeline mode on PostgreSQL; nothing on SQLite (no round trips there)."""
    if isinstance(conn, PgConnection):
        with conn.raw.pipeline():
            yield
    else:
        yield


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


def _sort_out(
    batch: _Batch, events: Sequence[AuditEvent]
) -> tuple[list[tuple[AuditEvent, int | None]], list[AuditEvent]]:
    """Split a batch into new events (with their chain verdict) and conflicting versions;
    count the duplicates. New events join ``known`` at once, so each links to the one
    before it in the same batch."""
    fresh: list[tuple[AuditEvent, int | None]] = []
    conflicting: list[AuditEvent] = []
    for ev in events:
        before = batch.known.get(ev.seq)
        if before is not None:
            if before.hash == ev.hash:
                batch.duplicates += 1
            else:
                conflicting.append(ev)
        elif ev.seq <= batch.acked:
            batch.duplicates += 1  # acknowledged before, since removed by retention
        else:
            chain_ok = _chain_ok(ev, batch)
            batch.known[ev.seq] = _Stored(ev.hash, ev.prev_hash, chain_ok)
            fresh.append((ev, chain_ok))
    return fresh, conflicting


def _store_fresh(batch: _Batch, fresh: Sequence[tuple[AuditEvent, int | None]]) -> list[AuditEvent]:
    """Insert the new events in one statement; return any another writer stored first.

    Under the per-device lock nobody can, so that list is empty; were the lock ever
    bypassed, such an event is compared with the stored version like any resend.
    """
    rows = [batch.row(ev, chain_ok, partitions.month_key(ev.wall_time)) for ev, chain_ok in fresh]
    inserted = bulk.insert(batch.conn, "audit_events", _EVENT_COLUMNS, rows)
    raced: list[AuditEvent] = []
    for ev, chain_ok in fresh:
        if ev.seq not in inserted:
            del batch.known[ev.seq]
            if _stored_hash(batch, ev.seq) == ev.hash:
                batch.duplicates += 1
            else:
                raced.append(ev)
            continue
        batch.stored += 1
        batch.new_seqs.append(ev.seq)
        if chain_ok == 0:
            batch.breaks.append(ev.seq)
        if ev.kind == "system":  # the only kind that reports losses
            _record_loss(batch, ev)
    return raced


def _store_conflicts(batch: _Batch, conflicting: Sequence[AuditEvent]) -> None:
    """Keep versions that differ from the stored ones apart, each version once."""
    if not conflicting:
        return
    rows = [batch.row(ev, int(ev.hash_ok)) for ev in conflicting]
    inserted = bulk.insert(batch.conn, "audit_conflicts", _CONFLICT_COLUMNS, rows)
    for ev in sorted(conflicting, key=lambda e: e.seq):
        if ev.seq not in inserted:
            batch.duplicates += 1  # this very conflicting version was stored before
            continue
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


def _chain_ok(ev: AuditEvent, batch: _Batch) -> int | None:
    """1 if ``ev`` links to its stored predecessor, 0 if not, None if that is not here yet.

    A predecessor at ``acked_seq`` removed by retention is checked against the hash kept in
    ``audit_progress``.
    """
    if not ev.hash_ok:
        return 0
    if ev.seq == 1:
        return int(ev.prev_hash == audit.GENESIS_HASH)
    previous = batch.known.get(ev.seq - 1)
    if previous is not None:
        return int(ev.prev_hash == previous.hash)
    if ev.seq - 1 == batch.acked and batch.acked_hash is not None:
        return int(ev.prev_hash == batch.acked_hash)
    return None  # predecessor not received yet; checked when it arrives


def _advance_acked(batch: _Batch) -> int:
    """Move the epoch's high-water mark over every stored event that follows it.

    Every batch leaves the mark on the last event before a hole (this walk, under the
    device's lock), so the event after the stored mark is never stored. The batch's window
    (``known``) is complete: a walk that stops inside it found the hole without another
    read, and one that does not move (a resend, or a batch past a hole) has nothing to
    find. Only a walk that runs off the end of the window reads on in the table: the batch
    may have filled the hole before events stored earlier.
    """
    acked, tip = batch.acked, batch.acked_hash
    while acked + 1 in batch.known:
        acked += 1
        tip = batch.known[acked].hash
    if acked >= batch.hi and acked > batch.acked:
        acked, tip = _scan_acked(batch, acked, tip)
    if not batch.has_progress or acked != batch.acked:
        batch.conn.execute(
            "INSERT INTO audit_progress (device_id, epoch, acked_seq, acked_hash)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (device_id, epoch) DO UPDATE"
            " SET acked_seq = excluded.acked_seq, acked_hash = excluded.acked_hash",
            (batch.device_id, batch.epoch, acked, tip),
        )
    return acked


def _scan_acked(batch: _Batch, acked: int, tip: str | None) -> tuple[int, str | None]:
    """Walk the stored events after ``acked`` in the table, a thousand at a time."""
    while True:
        rows = batch.conn.execute(
            "SELECT seq, hash FROM audit_events WHERE device_id = ? AND epoch = ? AND seq > ?"
            " ORDER BY seq LIMIT 1000",
            (batch.device_id, batch.epoch, acked),
        ).fetchall()
        for seq, hash_ in rows:
            if seq != acked + 1:
                return acked, tip
            acked, tip = seq, hash_
        if len(rows) < 1000:
            return acked, tip
