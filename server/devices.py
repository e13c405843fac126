"""Device records as the server sees them (the registry itself lives in ``provisioning``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    """An enrolled kiosk, as attached to an authenticated request."""

    device_id: str
    serial: str
    site: str
    gate: str
    location: str
    status: str  # active | revoked


@dataclass(frozen=True)
class DeviceCredential:
    """A device record and the SHA-256 (hex) of its secret."""

    device: Device
    secret_sha256: str


def find_device(conn: sqlite3.Connection, device_id: str) -> DeviceCredential | None:
    """Look a device up by id; None when unknown."""
    row = conn.execute(
        "SELECT device_id, serial, site, gate, location, status, secret_sha256"
        " FROM devices WHERE device_id = ?",
        (device_id,),
    ).fetchone()
    if row is None:
        return None
    return DeviceCredential(Device(*row[:6]), row[6])


def record_heartbeat(
    conn: sqlite3.Connection, device_id: str, status_json: str, seen_at: str
) -> None:
    """Store a device's last reported status and when it was seen."""
    conn.execute(
        "UPDATE devices SET last_heartbeat = ?, last_seen_at = ? WHERE device_id = ?",
        (status_json, seen_at, device_id),
    )
