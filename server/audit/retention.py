"""Audit retention: remove what was received before a cut (``kiosk server prune --before``).

Removed: events (``audit_events``), conflicting versions (``audit_conflicts``) and loss
reports (``audit_losses``) whose ``received_at`` is before the cut; never a row received at
or after it. Kept: ``audit_progress`` (each epoch's ``acked_seq`` and the hash of the event
there) and ``audit_device_state`` (the alert counts). Keeping the progress is what makes
pruning safe for the kiosks: an event at or below ``acked_seq`` that is no longer stored
is acknowledged again as a duplicate, not stored as new (server/audit/ingestion.py), and the
first event after the pruned tip is still verified against ``acked_hash``. An event above
``acked_seq`` that was stored past a hole and then pruned would be stored again if resent
(the kiosk forgets such events once ``held`` names them, so it does not resend them).

On PostgreSQL, month partitions (server/audit/partitions.py) whose every row was received
before the cut are dropped whole, under a short exclusive lock on ``audit_events``; the rest
is deleted in batches of ``batch_size`` rows, each batch its own transaction, so uploads go
on between batches. On SQLite everything is deleted that way, through the ``received_at``
indexes of migration 10.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from server.audit import partitions
from server.storage.connection import Connection, dialect_of
from server.storage.db import transaction

log = logging.getLogger(__name__)

#: Rows removed per transaction.
BATCH_SIZE = 10_000
#: How long prune waits for the lock that dropping partitions needs before it deletes instead.
LOCK_TIMEOUT = "5s"

#: Each audit table's unique key (PostgreSQL deletes by key; SQLite by rowid).
_KEYS = {
    "audit_events": "device_id, epoch, seq, wall_month",
    "audit_conflicts": "device_id, epoch, seq, hash",
    "audit_losses": "device_id, epoch, seq",
}


@dataclass(frozen=True)
class PruneReport:
    """What one prune removed."""

    before: str
    events: int
    conflicts: int
    losses: int
    partitions_dropped: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """As ``kiosk server prune --json`` prints it."""
        return {
            "before": self.before,
            "events": self.events,
            "conflicts": self.conflicts,
            "losses": self.losses,
            "partitions_dropped": list(self.partitions_dropped),
        }


def default_cut(now: datetime, retention_days: int) -> datetime | None:
    """The cut ``[audit] retention_days`` gives at ``now``; None when it is 0 (keep all)."""
    return None if retention_days <= 0 else now - timedelta(days=retention_days)


def cut_text(before: datetime) -> str:
    """``before`` as stored ``received_at`` values are written (UTC, whole seconds).

    Truncating to the second can only move the cut earlier, never past an event.
    """
    if before.utcoffset() is None:
        raise ValueError("before: a time with a UTC offset is needed")
    return before.astimezone(UTC).isoformat(timespec="seconds")


def prune(conn: Connection, before: datetime, *, batch_size: int = BATCH_SIZE) -> PruneReport:
    """Remove the audit rows received before ``before``; say how many of each went."""
    cut = cut_text(before)
    dropped: dict[str, int] = {}
    if dialect_of(conn) == "postgresql":
        dropped = _drop_partitions(conn, cut)
    report = PruneReport(
        before=cut,
        events=sum(dropped.values()) + _delete(conn, "audit_events", cut, batch_size),
        conflicts=_delete(conn, "audit_conflicts", cut, batch_size),
        losses=_delete(conn, "audit_losses", cut, batch_size),
        partitions_dropped=tuple(sorted(dropped)),
    )
    log.info(
        "audit pruned before %s: %d event(s) (%d partition(s) dropped), %d conflict(s),"
        " %d loss report(s)",
        cut, report.events, len(dropped), report.conflicts, report.losses,
    )  # fmt: skip
    return report


def _delete(conn: Connection, table: str, cut: str, batch_size: int) -> int:
    """Delete ``table``'s rows received before ``cut``, ``batch_size`` per transaction."""
    if dialect_of(conn) == "sqlite":
        sql = (
            f"DELETE FROM {table} WHERE rowid IN"
            f" (SELECT rowid FROM {table} WHERE received_at < ? LIMIT ?)"
        )
    else:
        key = _KEYS[table]
        sql = (
            f"DELETE FROM {table} WHERE ({key}) IN"
            f" (SELECT {key} FROM {table} WHERE received_at < ? LIMIT ?)"
        )
    total = 0
    while True:
        with transaction(conn):
            removed = conn.execute(sql, (cut, batch_size)).rowcount
        total += removed
        if removed < batch_size:
            return total


def _drop_partitions(conn: Connection, cut: str) -> dict[str, int]:
    """Drop the partitions whose every event was received before ``cut``; their sizes.

    Rows are counted before the lock is taken (no upload waits for a count); under the
    lock each partition's newest ``received_at`` is read again (an index lookup), so one
    that received an event meanwhile is kept. If the lock cannot be had within
    :data:`LOCK_TIMEOUT` (a long read holds the table), nothing is dropped and the rows are
    deleted in batches instead.
    """
    months = partitions.month_partitions(conn)
    candidates: dict[str, str | None] = {}
    for name, month in months.items():
        newest = _newest(conn, name)
        if _droppable(newest, month, cut):
            candidates[name] = newest
    if not candidates:
        return {}
    sizes = {
        name: int(conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]) for name in candidates
    }
    try:
        with transaction(conn):
            conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            conn.execute(f"LOCK TABLE {partitions.PARENT} IN ACCESS EXCLUSIVE MODE")
            dropped = {n: sizes[n] for n in candidates if _newest(conn, n) == candidates[n]}
            for name in dropped:
                conn.execute(f"DROP TABLE {name}")
    except psycopg.errors.LockNotAvailable:
        log.warning("audit prune: %s busy, deleting instead of dropping", partitions.PARENT)
        return {}
    partitions.forget(conn, [months[name] for name in dropped])
    return dropped


def _newest(conn: Connection, name: str) -> str | None:
    row = conn.execute(f"SELECT max(received_at) FROM {name}").fetchone()
    return None if row[0] is None else str(row[0])


def _droppable(newest: str | None, month: int, cut: str) -> bool:
    """All received before the cut, or empty and of a month wholly before it."""
    if newest is not None:
        return newest < cut
    return month == 0 or partitions.add_months(month, 1) <= partitions.month_key(cut)
