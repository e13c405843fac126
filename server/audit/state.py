"""A kiosk's audit trouble kept as server state, so alerts can be raised from it.

Issue 10 (parts 2 and 3): a full journal, conflicts, chain breaks, lost and flagged events
must not live only in a log line. Ingestion adds to the counts in the same transaction that
stores the events; the heartbeat handler records the journal's own report. An alerting job
reads :func:`alerts`, also served as ``GET /v1/admin/audit/alerts`` (server/fleet/admin.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec

from core import wire
from server.storage.connection import Connection


@dataclass(frozen=True)
class Counts:
    """What one batch added to a device's trouble."""

    conflicts: int = 0
    chain_breaks: int = 0
    lost: int = 0
    flagged: int = 0

    def __bool__(self) -> bool:
        return any((self.conflicts, self.chain_breaks, self.lost, self.flagged))


def count_ingest(conn: Connection, device_id: str, at: str, counts: Counts) -> None:
    """Add a batch's trouble to the device's counts (nothing to do for a clean batch)."""
    if not counts:
        return
    conn.execute(
        "INSERT INTO audit_device_state (device_id, conflicts, chain_breaks, lost, flagged,"
        " last_problem_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (device_id) DO UPDATE SET"
        " conflicts = audit_device_state.conflicts + excluded.conflicts,"
        " chain_breaks = audit_device_state.chain_breaks + excluded.chain_breaks,"
        " lost = audit_device_state.lost + excluded.lost,"
        " flagged = audit_device_state.flagged + excluded.flagged,"
        " last_problem_at = excluded.last_problem_at",
        (device_id, counts.conflicts, counts.chain_breaks, counts.lost, counts.flagged, at),
    )


def record_journal(conn: Connection, device_id: str, journal: wire.JournalState, at: str) -> None:
    """Keep the journal's last report; turning full (or losing events) marks a problem."""
    full = int(journal.full)
    troubled = full or journal.lost or journal.dead_letters
    conn.execute(
        "INSERT INTO audit_device_state (device_id, journal_full, journal, journal_seen_at,"
        " last_problem_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (device_id) DO UPDATE SET journal_full = excluded.journal_full,"
        " journal = excluded.journal, journal_seen_at = excluded.journal_seen_at,"
        " last_problem_at = CASE WHEN excluded.journal_full = 1"
        "   AND audit_device_state.journal_full = 0 THEN excluded.journal_seen_at"
        "   ELSE COALESCE(audit_device_state.last_problem_at, excluded.last_problem_at) END",
        (device_id, full, _json(journal), at, at if troubled else None),
    )


def _json(journal: wire.JournalState) -> str:
    return msgspec.json.encode(journal).decode()


def history(conn: Connection, device_id: str) -> wire.AuditHistory:
    """The device's journal epochs known here and the events acknowledged in them."""
    epochs, events = conn.execute(
        "SELECT count(*), COALESCE(sum(acked_seq), 0) FROM audit_progress WHERE device_id = ?",
        (device_id,),
    ).fetchone()
    return wire.AuditHistory(epochs=int(epochs), events=int(events))


def alerts(conn: Connection) -> list[dict[str, Any]]:
    """Devices whose audit needs a person: journal full, conflicts, breaks, losses, flags.

    Latest problem first, each with its placement and status (``None`` for a device row
    that no longer exists); the shape of ``core.wire_admin.AuditAlert``
    (``GET /v1/admin/audit/alerts``).
    """
    rows = conn.execute(
        "SELECT s.device_id, d.serial, d.site, d.gate, d.status, s.journal_full, s.journal,"
        " s.journal_seen_at, s.conflicts, s.chain_breaks, s.lost, s.flagged, s.last_problem_at"
        " FROM audit_device_state AS s LEFT JOIN devices AS d ON d.device_id = s.device_id"
        " WHERE s.journal_full = 1 OR s.conflicts > 0 OR s.chain_breaks > 0 OR s.lost > 0"
        " OR s.flagged > 0 ORDER BY s.last_problem_at DESC, s.device_id"
    ).fetchall()
    return [
        {
            "device_id": row[0],
            "serial": row[1],
            "site": row[2],
            "gate": row[3],
            "status": row[4],
            "journal_full": bool(row[5]),
            "journal": json.loads(row[6]) if row[6] else None,
            "journal_seen_at": row[7],
            "conflicts": row[8],
            "chain_breaks": row[9],
            "lost": row[10],
            "flagged": row[11],
            "last_problem_at": row[12],
        }
        for row in rows
    ]
