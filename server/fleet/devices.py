"""Device records as the server sees them (the registry itself lives in ``provisioning``)."""

from __future__ import annotations

from dataclasses import dataclass

from server.storage.connection import Connection


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
