"""The webhook queue (``alert_deliveries``): one row per alert change to POST.

A row is queued in the same transaction as the change it announces, so a change is never
lost between the two. To send, a process first *claims* rows (a lease, ``lease_until``):
the ``UPDATE`` that takes the lease re-checks that nobody holds it, so of several processes
one sends each row. A row marked ``sent`` is never sent again, restart or not. A process
that dies mid-POST leaves its lease to expire and the row is sent again: delivery is at
least once, and each POST names its delivery (``alert_id:change``) so a receiver can tell.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.storage.connection import Connection

#: How many rows one claim takes at most.
CLAIM_BATCH = 20


@dataclass(frozen=True)
class Delivery:
    """A claimed row: which alert, which change, and how many attempts so far (this one
    included)."""

    alert_id: str
    change: str
    site: str
    attempts: int

    @property
    def key(self) -> str:
        return f"{self.alert_id}:{self.change}"


def queue(conn: Connection, alert_id: str, change: str, site: str, due_at: float) -> None:
    """Queue the webhook POST of one alert change (once: a second queueing changes nothing)."""
    conn.execute(
        "INSERT INTO alert_deliveries (alert_id, change, site, next_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (alert_id, change, site, due_at),
    )


def claim(conn: Connection, now: float, lease_s: float, limit: int = CLAIM_BATCH) -> list[Delivery]:
    """Take the lease on pending rows due by ``now``; those this call took (run in one
    transaction: on PostgreSQL a second claimer's ``UPDATE`` waits for the first's commit,
    then finds the lease taken)."""
    due = conn.execute(
        "SELECT alert_id, change FROM alert_deliveries WHERE state = 'pending'"
        " AND next_at <= ? AND lease_until <= ? ORDER BY next_at LIMIT ?",
        (now, now, limit),
    ).fetchall()
    taken: list[Delivery] = []
    for alert_id, change in due:
        row = conn.execute(
            "UPDATE alert_deliveries SET lease_until = ?, attempts = attempts + 1"
            " WHERE alert_id = ? AND change = ? AND state = 'pending' AND lease_until <= ?"
            " RETURNING site, attempts",
            (now + lease_s, alert_id, change, now),
        ).fetchone()
        if row is not None:
            taken.append(Delivery(str(alert_id), str(change), str(row[0]), int(row[1])))
    return taken


def mark_sent(conn: Connection, delivery: Delivery, at: str) -> None:
    conn.execute(
        "UPDATE alert_deliveries SET state = 'sent', sent_at = ?, lease_until = 0,"
        " last_error = NULL WHERE alert_id = ? AND change = ?",
        (at, delivery.alert_id, delivery.change),
    )


def mark_failed(conn: Connection, delivery: Delivery, error: str, retry_at: float | None) -> None:
    """A failed attempt: try again at ``retry_at``, or give up (None)."""
    conn.execute(
        "UPDATE alert_deliveries SET state = ?, next_at = COALESCE(?, next_at),"
        " lease_until = 0, last_error = ? WHERE alert_id = ? AND change = ?",
        (
            "pending" if retry_at is not None else "failed",
            retry_at,
            error[:500],
            delivery.alert_id,
            delivery.change,
        ),
    )


def next_due(conn: Connection) -> float | None:
    """When the earliest pending row is due (unix seconds), None when none is pending."""
    row = conn.execute(
        "SELECT MIN(next_at) FROM alert_deliveries WHERE state = 'pending'"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def state_of(conn: Connection, alert_id: str, change: str) -> tuple[str, int] | None:
    """(state, attempts) of one row, for tests and tools."""
    row = conn.execute(
        "SELECT state, attempts FROM alert_deliveries WHERE alert_id = ? AND change = ?",
        (alert_id, change),
    ).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))
