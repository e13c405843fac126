"""The lookup's storage: the audit trail that is also the rate limit, and the source history.

**Audit and rate limit are one table.** Each lookup reserves its ``guard_lookups`` row before
anything is looked up (outcome ``pending``) and fills the outcome in afterwards, so an attempt
is on record even when what follows fails, and no answer is ever shown unaudited. The rate
limit counts the guard's rows within the sliding window in the same transaction, under a
per-guard lock (SQLite's write lock; a PostgreSQL advisory lock), so it holds across every
server process and host sharing the database: a per-process token bucket would let ``N``
workers give a guard ``N`` times the rate, and the audit write is paid for anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from server.storage.connection import Connection
from server.storage.db import durable, lock

By = Literal["id", "phone"]
PENDING = "pending"
#: Outcome recorded for a phone number that matches nobody.
NOT_FOUND = "not_found"


def iso(moment: datetime) -> str:
    """UTC ISO 8601 to the second: the schema's timestamps, in text order = time order."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Reservation:
    """The audit row of an admitted lookup, or how long the guard must wait."""

    lookup_id: int | None
    retry_after_s: float = 0.0


def reserve(
    conn: Connection,
    *,
    username: str,
    site: str,
    by: By,
    masked_id: str,
    now: datetime,
    max_per_window: int,
    window_s: float,
) -> Reservation:
    """Admit and record a lookup unless ``username`` made ``max_per_window`` within the last
    ``window_s`` seconds; then the wait is until the oldest of those leaves the window."""
    with durable(conn):
        lock(conn, f"siheyi:lookup:{username}")
        row = conn.execute(
            "SELECT at FROM guard_lookups WHERE username = ? AND at > ?"
            " ORDER BY at DESC LIMIT 1 OFFSET ?",
            (username, iso(now - timedelta(seconds=window_s)), max_per_window - 1),
        ).fetchone()
        if row is not None:
            frees_at = datetime.fromisoformat(row[0]) + timedelta(seconds=window_s)
            return Reservation(None, max(1.0, (frees_at - now).total_seconds()))
        inserted = conn.execute(
            "INSERT INTO guard_lookups (username, site, masked_id, by, outcome, at)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (username, site, masked_id, by, PENDING, iso(now)),
        ).fetchone()
    return Reservation(int(inserted[0]))


def finish(conn: Connection, lookup_id: int, masked_id: str, outcome: str) -> None:
    """Record what a reserved lookup found (the masked number a phone resolved to)."""
    with durable(conn):
        conn.execute(
            "UPDATE guard_lookups SET masked_id = ?, outcome = ? WHERE id = ?",
            (masked_id, outcome, lookup_id),
        )


@dataclass(frozen=True)
class History:
    """What the local tables hold beyond the verifier's one value per source."""

    nat: Sequence[tuple[str, str, str]]  # (result, sampled_at, lab), newest first
    doses: Sequence[tuple[int, str, str]]  # (dose, vaccinated_at, vaccine), by dose


def history(conn: Connection, id_number: str, nat_results: int) -> History:
    """The latest ``nat_results`` NAT results and every vaccine dose of one person."""
    nat = conn.execute(
        "SELECT result, sampled_at, lab FROM nat_results WHERE id_number = ?"
        " ORDER BY sampled_at DESC LIMIT ?",
        (id_number, nat_results),
    ).fetchall()
    doses = conn.execute(
        "SELECT dose, vaccinated_at, vaccine FROM vaccinations WHERE id_number = ? ORDER BY dose",
        (id_number,),
    ).fetchall()
    return History(
        [(str(r), str(s), str(lab)) for r, s, lab in nat],
        [(int(d), str(at), str(v)) for d, at, v in doses],
    )
