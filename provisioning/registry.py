"""The device registry: add, rotate, revoke and list kiosks; write device bundles.

A device gets a random id (``k-`` + 10 hex digits) and a 32-byte URL-safe secret of which
only the SHA-256 is stored. The bundle handed to the kiosk is a JSON file readable by its
owner only (mode 0600); it also carries the fleet key and the server's snapshot public key.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from provisioning.errors import (
    BundleError,
    DeviceNotFound,
    DeviceRevoked,
    InvalidField,
    SerialExists,
)
from server.auth import secret_sha256
from server.db import connect, transaction
from server.keys import fleet_key, server_public_key

__all__ = [
    "DeviceBundle",
    "DeviceRecord",
    "add_device",
    "fleet_key",
    "get_device",
    "list_devices",
    "revoke_device",
    "write_bundle",
]

_SERIAL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True)
class DeviceBundle:
    """Everything a kiosk needs to talk to the server; written by :func:`write_bundle`."""

    device_id: str
    secret: str
    serial: str
    site: str
    gate: str
    server_url: str
    fleet_key: str
    server_key: str = ""  # hex raw Ed25519 public key that signs site snapshots

    def to_json(self) -> dict[str, str]:
        """The bundle file's content."""
        return asdict(self)


@dataclass(frozen=True)
class DeviceRecord:
    """A registry row, without any secret."""

    device_id: str
    serial: str
    site: str
    gate: str
    location: str
    status: str
    created_at: str
    last_seen_at: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``kiosk provision list --json``)."""
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _field(name: str, value: str, *, required: bool, max_len: int = 100) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidField(f"{name} must not be empty")
    if len(value) > max_len or any(ord(c) < 32 for c in value):
        raise InvalidField(f"{name} must be at most {max_len} printable characters")
    return value


def add_device(
    database: str | Path,
    serial: str,
    site: str,
    gate: str = "",
    location: str = "",
    *,
    server_url: str = "http://127.0.0.1:8080",
    rotate_secret: bool = False,
    bundle_path: str | Path | None = None,
) -> DeviceBundle:
    """Register a kiosk by serial and return its bundle (the only place the secret appears).

    Adding an existing serial raises :class:`SerialExists` unless ``rotate_secret`` is set:
    then the device keeps its id, gets a new secret (the old one stops working) and its site,
    gate and location are updated. A revoked device cannot be rotated.

    With ``bundle_path`` the bundle is also written there (mode 0600), all or nothing: a
    temporary file is created in the target directory first (so an unwritable destination
    fails before anything is registered), filled and synced inside the registration
    transaction, and renamed into place after the commit; any failure before the commit
    leaves neither a registration nor a file. An existing ``bundle_path`` is refused
    (:class:`BundleError`) unless ``rotate_secret`` is set.
    """
    if _SERIAL.fullmatch(serial) is None:
        raise InvalidField("serial must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    site = _field("site", site, required=True)
    gate = _field("gate", gate, required=False)
    location = _field("location", location, required=False, max_len=200)
    url = urlsplit(server_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise InvalidField(f"server_url must be an http(s) URL, got {server_url!r}")
    secret = secrets.token_urlsafe(32)
    staged = _StagedBundle(Path(bundle_path)) if bundle_path is not None else None
    try:
        bundle = _register(
            database, serial, site, gate, location, server_url, rotate_secret, secret, staged
        )
    except BaseException:
        if staged is not None:
            staged.discard()
        raise
    if staged is not None:
        staged.publish()
    return bundle


def _register(
    database: str | Path,
    serial: str,
    site: str,
    gate: str,
    location: str,
    server_url: str,
    rotate_secret: bool,
    secret: str,
    staged: _StagedBundle | None,
) -> DeviceBundle:
    with connect(database) as conn, transaction(conn):
        key = fleet_key(conn)
        public = server_public_key(conn)
        conn.execute("INSERT INTO sites (site) VALUES (?) ON CONFLICT (site) DO NOTHING", (site,))
        row = conn.execute(
            "SELECT device_id, status FROM devices WHERE serial = ?", (serial,)
        ).fetchone()
        if row is None:
            device_id = _new_device_id(conn)
            conn.execute(
                "INSERT INTO devices (device_id, serial, site, gate, location, secret_sha256,"
                " status, created_at) VALUES (?, ?, ?, ?, ?, ?, 'active', ?)",
                (device_id, serial, site, gate, location, secret_sha256(secret), _now()),
            )
        elif not rotate_secret:
            raise SerialExists(f"serial exists: {serial} is device {row[0]} (use --rotate-secret)")
        elif row[1] != "active":
            raise DeviceRevoked(f"device {row[0]} (serial {serial}) is revoked")
        else:
            device_id = row[0]
            conn.execute(
                "UPDATE devices SET secret_sha256 = ?, site = ?, gate = ?, location = ?"
                " WHERE device_id = ?",
                (secret_sha256(secret), site, gate, location, device_id),
            )
        bundle = DeviceBundle(
            device_id, secret, serial, site, gate, server_url.rstrip("/"), key, public
        )
        if staged is not None:
            if staged.target.exists() and not rotate_secret:
                raise BundleError(
                    f"bundle exists: {staged.target} (it may hold another device's secret;"
                    " remove it or use --rotate-secret)"
                )
            staged.write(bundle)  # before the commit: a failure here rolls back
    return bundle


class _StagedBundle:
    """A bundle written to a temporary file next to its target, then renamed into place."""

    def __init__(self, target: Path) -> None:
        self.target = target
        if target.is_dir():
            raise BundleError(f"cannot write bundle {target}: is a directory")
        self.tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            self._fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise BundleError(f"cannot write bundle {target}: {exc.strerror or exc}") from exc

    def write(self, bundle: DeviceBundle) -> None:
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                os.fchmod(fh.fileno(), 0o600)
                json.dump(bundle.to_json(), fh, indent=2, ensure_ascii=False)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise BundleError(f"cannot write bundle {self.target}: {exc.strerror or exc}") from exc

    def publish(self) -> None:
        try:
            os.replace(self.tmp, self.target)
        except OSError as exc:  # registered: keep the temporary file, it holds the secret
            raise BundleError(
                f"device registered but its bundle could not be renamed to {self.target}:"
                f" {exc.strerror or exc}; the bundle is in {self.tmp}"
            ) from exc

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.tmp.unlink(missing_ok=True)


def _new_device_id(conn: sqlite3.Connection) -> str:
    while True:
        device_id = "k-" + secrets.token_hex(5)
        if (
            conn.execute("SELECT 1 FROM devices WHERE device_id = ?", (device_id,)).fetchone()
            is None
        ):
            return device_id


def write_bundle(bundle: DeviceBundle, path: str | Path) -> Path:
    """Write ``bundle`` as JSON, readable by its owner only (0600), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(bundle.to_json(), fh, indent=2, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def revoke_device(database: str | Path, serial_or_id: str) -> DeviceRecord:
    """Revoke a device by serial or device id; effective on its next request. Idempotent."""
    with connect(database) as conn, transaction(conn):
        record = _find(conn, serial_or_id)
        conn.execute(
            "UPDATE devices SET status = 'revoked' WHERE device_id = ?", (record.device_id,)
        )
    return DeviceRecord(**{**record.to_json(), "status": "revoked"})


_COLUMNS = "device_id, serial, site, gate, location, status, created_at, last_seen_at"


def _find(conn: sqlite3.Connection, serial_or_id: str) -> DeviceRecord:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM devices WHERE device_id = ? OR serial = ?"
        " ORDER BY CASE WHEN device_id = ? THEN 0 ELSE 1 END LIMIT 1",
        (serial_or_id, serial_or_id, serial_or_id),
    ).fetchone()
    if row is None:
        raise DeviceNotFound(f"no device with serial or id {serial_or_id!r}")
    return DeviceRecord(*row)


def get_device(database: str | Path, serial_or_id: str) -> DeviceRecord:
    """Return one device by serial or device id."""
    with connect(database) as conn:
        return _find(conn, serial_or_id)


def list_devices(database: str | Path) -> list[DeviceRecord]:
    """All devices, ordered by site, gate and serial."""
    with connect(database) as conn:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM devices ORDER BY site, gate, serial")
        return [DeviceRecord(*row) for row in rows]
