"""Device records as the server sees them (the registry itself lives in ``provisioning``)."""

from __future__ import annotations

from dataclasses import dataclass

from server.storage.connection import Connection
from server.storage.db import Database, transaction


@dataclass(frozen=True)
class Device:
    """An enrolled kiosk, as attached to an authenticated request."""

    device_id: str
    serial: str
    site: str
    gate: str
    location: str
    status: str  # active | quarantined | revoked


def record_heartbeat(conn: Connection, device_id: str, status_json: str, seen_at: str) -> None:
    """Store a device's last reported status and when it was seen."""
    conn.execute(
        "UPDATE devices SET last_heartbeat = ?, last_seen_at = ? WHERE device_id = ?",
        (status_json, seen_at, device_id),
    )


async def store_heartbeat(db: Database, device_id: str, status_json: str, seen_at: str) -> None:
    """Record a heartbeat the cheapest way for the backend: it is status, not audit data.

    SQLite: in the database thread's group commit with the audit uploads queued meanwhile
    (``Database.write``: no transaction of its own). PostgreSQL: without waiting for the WAL
    flush (``synchronous_commit = off`` for this transaction only): a crash of PostgreSQL can
    lose the last fraction of a second of ``last_seen_at``, which the next heartbeat, 30 s
    later, writes again.
    """
    if db.dialect == "sqlite":
        await db.write(record_heartbeat, device_id, status_json, seen_at)
    else:
        await db.run(_record_heartbeat_lazily, device_id, status_json, seen_at)


def _record_heartbeat_lazily(
    conn: Connection, device_id: str, status_json: str, seen_at: str
) -> None:
    with transaction(conn):
        conn.execute("SET LOCAL synchronous_commit = off")
        record_heartbeat(conn, device_id, status_json, seen_at)
