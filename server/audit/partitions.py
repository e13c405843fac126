"""Monthly partitions of ``audit_events`` on PostgreSQL (migration 10).

Why the event's own month: a unique constraint on a partitioned table must contain the
partition key, so the key has to be something a resent event repeats exactly. ``wall_month``
(``YYYYMM`` of the ``wall_time`` the kiosk wrote, in its own calendar) is part of the hashed
event, so a replay lands in the same partition and ``UNIQUE (device_id, epoch, seq,
wall_month)`` still refuses it. A *different* event with the same seq but another month would
slip past that constraint; ingestion never relies on it alone: it reads the epoch's stored
events under a per-device lock before inserting (server/audit/ingestion.py), and that read
knows nothing of months, so such an event goes to ``audit_conflicts``.

Partitions: ``audit_events_legacy`` (``wall_month`` 0: the rows stored before migration 10,
kept in place), one ``audit_events_pYYYYMM`` per month from the month before the server's
current one to two months ahead (made here, on first use per process and month), and
``audit_events_default`` for everything else: a kiosk whose clock says 1970 or 2099 is
stored there, not refused, and cannot make the server create a table per month it invents.
When a month gets its partition after the default received some of its events (a clock
ahead of the server's), those rows are moved into the new partition in the same transaction.

SQLite has the ``wall_month`` column too (one schema) but no partitions: everything here is a
no-op there.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime
from functools import lru_cache

from server.storage.connection import Connection, dialect_of
from server.storage.db import lock, transaction
from server.storage.postgres import PgConnection

log = logging.getLogger(__name__)

#: Months before and after the server's current month that get a partition of their own.
MONTHS_BEFORE = 1
MONTHS_AHEAD = 2
PARENT = "audit_events"
DEFAULT = "audit_events_default"
LEGACY = "audit_events_legacy"
_NAME = re.compile(r"^audit_events_p(\d{6})$")
_LOCK = "audit:partitions"

#: ``(database identity, month)`` pairs this process has made sure of.
_ensured: set[tuple[str, int]] = set()
_ensured_lock = threading.Lock()


def month_key(timestamp: str) -> int:
    """``YYYYMM`` of an ISO 8601 timestamp as written (its own offset, not converted).

    The usual ``YYYY-MM-…`` form is read off the text (this runs for every stored event);
    any other form ``datetime.fromisoformat`` accepts is parsed.
    """
    key = _prefix_month(timestamp[:7])
    if key:
        return key
    parsed = datetime.fromisoformat(timestamp)
    return parsed.year * 100 + parsed.month


@lru_cache(maxsize=256)
def _prefix_month(prefix: str) -> int:
    """``YYYYMM`` of a ``YYYY-MM`` prefix, 0 if it is not one."""
    if len(prefix) == 7 and prefix[4] == "-" and prefix[:4].isdigit() and prefix[5:].isdigit():
        return int(prefix[:4]) * 100 + int(prefix[5:])
    return 0


def add_months(key: int, months: int) -> int:
    """The month ``months`` after (or before, if negative) the month ``key``."""
    index = (key // 100) * 12 + key % 100 - 1 + months
    return (index // 12) * 100 + index % 12 + 1


def partition_name(key: int) -> str:
    """The table holding month ``key``."""
    return f"audit_events_p{key:06d}"


def month_partitions(conn: Connection) -> dict[str, int]:
    """Every partition but the default, named, with its month (0 for the legacy one)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = to_regclass(?)",
        (PARENT,),
    ).fetchall()
    found: dict[str, int] = {}
    for (name,) in rows:
        match = _NAME.match(name)
        if match:
            found[name] = int(match.group(1))
        elif name == LEGACY:
            found[name] = 0
    return found


def ensure(conn: Connection, received_at: str) -> None:
    """Make sure the months around ``received_at`` have partitions (PostgreSQL only).

    Called outside any transaction (it runs its own) before a batch is stored; after the
    first call for a month it costs a set lookup. A partition dropped meanwhile by another
    process's prune only sends that month's late events to the default partition.
    """
    if dialect_of(conn) != "postgresql":
        return
    current = month_key(received_at)
    wanted = [add_months(current, n) for n in range(-MONTHS_BEFORE, MONTHS_AHEAD + 1)]
    identity = _identity(conn)
    with _ensured_lock:
        missing = [m for m in wanted if (identity, m) not in _ensured]
    if not missing:
        return
    for key in missing:
        create_month(conn, key)
    with _ensured_lock:
        _ensured.update((identity, m) for m in missing)


def forget(conn: Connection, keys: list[int]) -> None:
    """Drop this process's memory of months whose partitions were just dropped."""
    identity = _identity(conn)
    with _ensured_lock:
        _ensured.difference_update((identity, k) for k in keys)


def _identity(conn: Connection) -> str:
    """Which database ``conn`` is connected to (tests run many in one process), from the
    connection's own parameters: no round trip."""
    info = conn.raw.info if isinstance(conn, PgConnection) else None
    if info is None:
        return str(id(conn))
    return f"{info.host}:{info.port}/{info.dbname}"


def create_month(conn: Connection, key: int) -> bool:
    """Create month ``key``'s partition unless it exists; return whether it was created.

    Built beside the table and attached (``ATTACH PARTITION`` takes a lock that lets
    inserts go on, where ``CREATE TABLE … PARTITION OF`` would stop them); events of that
    month already in the default partition move into it first, or the attach would fail.
    """
    name = partition_name(key)
    with transaction(conn):
        lock(conn, _LOCK)
        if conn.execute("SELECT to_regclass(?)", (name,)).fetchone()[0] is not None:
            return False
        conn.execute(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS)")
        conn.execute(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
        moved = conn.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE wall_month = ? RETURNING *)"
            f" INSERT INTO {name} SELECT * FROM moved",
            (key,),
        ).rowcount
        conn.execute(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name}"
            f" FOR VALUES FROM ({key}) TO ({add_months(key, 1)})"
        )
    log.info("audit partition %s created (%d event(s) moved from the default)", name, moved)
    return True
