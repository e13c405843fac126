"""The device registry as files and commands: add kiosks (one or a CSV of thousands), write
their bundles, revoke, quarantine, rotate, list.

A kiosk's identity is its own Ed25519 key pair (docs/identity.md). Provisioning generates the
pair for bulk bundles; the server only ever stores the public half. A bundle is one JSON file
per kiosk, mode 0600: device id, serial, placement, server URL, the pseudonym key of the
kiosk's own site (field ``site_key``; ``fleet_key`` before, still written for old kiosks),
the server's snapshot public key, the fleet CA (PEM, optional) and the kiosk's private key.
There is no fleet-wide secret in a bundle: the pseudonym key is per site, only keys the HMAC
pseudonyms of that site's cache, journal and snapshots, and authenticates nothing.

The SQL lives in :mod:`server.fleet.registry`, shared with the server's admin API.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.bundle import Bundle, bundle_text
from provisioning import keygen
from server.errors import (
    BundleError,
    DeviceRevoked,
    InvalidField,
    RowError,
    SerialExists,
)
from server.fleet import registry as fleet
from server.fleet.registry import BulkReport, DeviceRecord, DeviceRow
from server.offline.keys import server_public_key, site_key
from server.storage.db import connect, transaction

__all__ = [
    "BulkReport",
    "DeviceBundle",
    "DeviceRecord",
    "add_device",
    "add_from_csv",
    "get_device",
    "list_devices",
    "revoke_device",
    "write_bundle",
]

DEFAULT_SERVER_URL = "http://127.0.0.1:8080"
Progress = Callable[[str, int, int], None]


#: A kiosk's bundle, as :mod:`core.bundle` defines it for both ends.
DeviceBundle = Bundle


def _check_url(server_url: str) -> str:
    url = urlsplit(server_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise InvalidField(f"server_url must be an http(s) URL, got {server_url!r}")
    return server_url.rstrip("/")


def _fleet_defaults(conn: sqlite3.Connection, server_url: str | None) -> tuple[str, str, str]:
    """(server_url, server_key, tls_ca) for new bundles; the pseudonym key is per site
    (:func:`server.offline.keys.site_key`)."""
    url = server_url or fleet.get_setting(conn, "server_url") or DEFAULT_SERVER_URL
    return (
        _check_url(url),
        server_public_key(conn),
        fleet.get_setting(conn, "tls_ca"),
    )


def add_device(
    database: str | Path,
    serial: str,
    site: str,
    gate: str = "",
    location: str = "",
    *,
    server_url: str | None = None,
    rekey: bool = False,
    rotate_secret: bool = False,
    bundle_path: str | Path | None = None,
) -> DeviceBundle:
    """Register one kiosk by serial with a fresh key pair and return its bundle.

    The site is created if needed. An existing serial raises :class:`SerialExists` unless
    ``rekey`` (old name: ``rotate_secret``) is set: then the device keeps its id, gets a new
    key pair (the old key and its sessions stop working) and its placement is updated. A
    revoked device cannot be re-keyed.

    With ``bundle_path`` the bundle is also written there (0600), all or nothing: a temporary
    file next to the target is filled and synced inside the registration transaction and
    renamed into place after the commit. An existing ``bundle_path`` is refused
    (:class:`BundleError`) unless re-keying.
    """
    rekey = rekey or rotate_secret
    row = fleet.device_row({"serial": serial, "site": site, "gate": gate, "location": location})
    serial = row.serial
    if server_url is not None:
        _check_url(server_url)
    key_private, key_public = keygen.generate_raw(1)[0]
    staged = _StagedBundle(Path(bundle_path)) if bundle_path is not None else None
    try:
        with connect(database) as conn, transaction(conn):
            url, server_key, tls_ca = _fleet_defaults(conn, server_url)
            fleet.add_sites(conn, [row.site])
            pseudonym_key = site_key(conn, row.site)
            existing = conn.execute(
                "SELECT device_id, status FROM devices WHERE serial = ?", (row.serial,)
            ).fetchone()
            if existing is None:
                report = fleet.upsert_devices(
                    conn, [(1, replace(row, public_key=key_public.hex()))], create_sites=True
                )
                device_id = report.results[0].device_id
                assert device_id is not None
            elif not rekey:
                raise SerialExists(f"serial exists: {serial} is device {existing[0]} (use --rekey)")
            elif existing[1] == "revoked":
                raise DeviceRevoked(f"device {existing[0]} (serial {serial}) is revoked")
            else:
                device_id = existing[0]
                conn.execute(
                    "UPDATE devices SET site = ?, gate = ?, location = ? WHERE device_id = ?",
                    (row.site, row.gate, row.location, device_id),
                )
                fleet.replace_key(conn, device_id, key_public.hex())
            bundle = DeviceBundle(
                device_id=device_id,
                serial=row.serial,
                site=row.site,
                gate=row.gate,
                server_url=url,
                site_key=pseudonym_key,
                server_key=server_key,
                private_key=key_private.hex(),
                public_key=key_public.hex(),
                tls_ca=tls_ca,
            )
            if staged is not None:
                if staged.target.exists() and not rekey:
                    raise BundleError(
                        f"bundle exists: {staged.target} (it may hold another kiosk's key;"
                        " remove it or use --rekey)"
                    )
                staged.write(bundle)  # before the commit: a failure here rolls back
    except BaseException:
        if staged is not None:
            staged.discard()
        raise
    if staged is not None:
        staged.publish()
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
                fh.write(bundle_text(bundle))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise BundleError(f"cannot write bundle {self.target}: {exc.strerror or exc}") from exc

    def publish(self) -> None:
        try:
            os.replace(self.tmp, self.target)
        except OSError as exc:  # registered: keep the temporary file, it holds the key
            raise BundleError(
                f"device registered but its bundle could not be renamed to {self.target}:"
                f" {exc.strerror or exc}; the bundle is in {self.tmp}"
            ) from exc

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.tmp.unlink(missing_ok=True)


def write_bundle(bundle: DeviceBundle, path: str | Path) -> Path:
    """Write ``bundle`` as JSON, readable by its owner only (0600), atomically."""
    from device.link.identity import write_private_file

    return write_private_file(Path(path), bundle_text(bundle))


# --- bulk: CSV ---------------------------------------------------------------------------


class CsvFormatError(InvalidField):
    """The CSV file cannot be used at all (unreadable, no header, no serial/site column)."""


def read_device_csv(path: str | Path) -> list[tuple[int, DeviceRow | RowError]]:
    """Parse a device CSV (``serial,site,gate,location[,…]``) into validated rows.

    Row numbers are CSV line numbers (header = 1). Extra columns are kept per device as
    ``extra``. A row with more or fewer fields than the header, or an invalid field, is a
    :class:`RowError` for that row; a file without a usable header raises
    :class:`CsvFormatError`.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvFormatError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise CsvFormatError(f"{path}: {exc.strerror or exc}") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvFormatError(
            f"{path}: empty file (expected a header serial,site,gate,location)"
        ) from None
    except csv.Error as exc:
        raise CsvFormatError(f"{path}: line 1: {exc}") from exc
    header = [h.strip() for h in header]
    missing = [c for c in ("serial", "site") if c not in header]
    if missing:
        raise CsvFormatError(f"{path}: header lacks column(s) {', '.join(missing)}")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates or "" in header:
        raise CsvFormatError(f"{path}: header has empty or repeated column names {duplicates}")
    rows: list[tuple[int, DeviceRow | RowError]] = []
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows.append((reader.line_num, RowError(f"row {reader.line_num}: {exc}")))
            break
        line = reader.line_num
        if not fields or fields == [""]:
            continue
        if len(fields) != len(header):
            rows.append(
                (line, RowError(f"row {line}: {len(fields)} fields, the header has {len(header)}"))
            )
            continue
        try:
            rows.append((line, fleet.device_row(dict(zip(header, fields, strict=True)))))
        except InvalidField as exc:
            rows.append((line, RowError(f"row {line}: {exc}")))
    return rows


@dataclass
class CsvResult:
    """A bulk add: the per-row report and where the new bundles went."""

    report: BulkReport
    bundles: list[Path] = field(default_factory=list)
    applied: bool = True


def add_from_csv(
    database: str | Path,
    csv_path: str | Path,
    *,
    bundle_dir: str | Path | None = None,
    server_url: str | None = None,
    create_sites: bool = False,
    dry_run: bool = False,
    all_or_nothing: bool = False,
    progress: Progress | None = None,
) -> CsvResult:
    """Upsert the devices of a CSV file keyed by serial, in one transaction.

    Bad rows are reported (row number, serial, reason) and skipped; the others are applied
    together, or — with ``all_or_nothing`` — nothing is applied when any row is bad. With
    ``bundle_dir`` every *new* device gets a key pair and a bundle ``<serial>.json`` (0600)
    there; without it new devices are pre-registered and enrol on the kiosk with a code.
    Bundles are written to a staging directory inside the transaction and moved into place
    after the commit, so a failure leaves neither registrations nor bundles behind.
    """
    note = progress or (lambda stage, done, total: None)
    rows = read_device_csv(csv_path)
    note("validated", len(rows), len(rows))
    out_dir = Path(bundle_dir) if bundle_dir is not None else None
    if server_url is not None:
        _check_url(server_url)
    with connect(database) as conn, transaction(conn):
        preview = fleet.upsert_devices(conn, rows, create_sites=create_sites, dry_run=True)
        created = {r.serial for r in preview.results if r.action == "created"}
        if out_dir is not None:
            rows = [
                (n, RowError(f"row {n}: bundle file {out_dir / (item.serial + '.json')} exists"))
                if isinstance(item, DeviceRow)
                and item.serial in created
                and (out_dir / f"{item.serial}.json").exists()
                else (n, item)
                for n, item in rows
            ]
            preview = fleet.upsert_devices(conn, rows, create_sites=create_sites, dry_run=True)
            created = {r.serial for r in preview.results if r.action == "created"}
        if dry_run or (all_or_nothing and preview.errors):
            return CsvResult(preview, applied=False)
        keys: dict[str, tuple[bytes, bytes]] = {}
        if out_dir is not None and created:
            pairs = keygen.generate_many(len(created))
            keys = dict(zip(sorted(created), pairs, strict=True))
            note("keys", len(keys), len(keys))
            rows = [
                (n, replace(item, public_key=keys[item.serial][1].hex()))
                if isinstance(item, DeviceRow) and item.serial in keys and not item.public_key
                else (n, item)
                for n, item in rows
            ]
        report = fleet.upsert_devices(conn, rows, create_sites=create_sites)
        note("registered", len(report.results), len(report.results))
        if out_dir is None or not keys:
            return CsvResult(report)
        url, server_key, tls_ca = _fleet_defaults(conn, server_url)
        site_keys: dict[str, str] = {}
        staging = _staging_dir(out_dir)
        try:
            items: list[tuple[str, str]] = []
            rows_by_serial = {i.serial: i for _, i in rows if isinstance(i, DeviceRow)}
            for result in report.results:
                if result.action != "created" or result.serial not in keys:
                    continue
                item = rows_by_serial[result.serial]
                private, public = keys[result.serial]
                assert result.device_id is not None
                if item.site not in site_keys:
                    site_keys[item.site] = site_key(conn, item.site)
                bundle = DeviceBundle(
                    device_id=result.device_id,
                    serial=item.serial,
                    site=item.site,
                    gate=item.gate,
                    server_url=url,
                    site_key=site_keys[item.site],
                    server_key=server_key,
                    private_key=private.hex(),
                    public_key=public.hex(),
                    tls_ca=tls_ca,
                )
                items.append((str(staging / f"{item.serial}.json"), bundle_text(bundle)))
            keygen.write_many(items)
            note("bundles", len(items), len(items))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    paths = []
    for tmp, _ in items:
        target = out_dir / Path(tmp).name
        os.replace(tmp, target)
        paths.append(target)
    shutil.rmtree(staging, ignore_errors=True)
    return CsvResult(report, paths)


def _staging_dir(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = out_dir / f".staging-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
    except OSError as exc:
        raise BundleError(f"cannot write bundles to {out_dir}: {exc.strerror or exc}") from exc
    return staging


# --- status, listing ---------------------------------------------------------------------


def revoke_device(database: str | Path, serial_or_id: str) -> DeviceRecord:
    """Revoke a device by serial or device id (final). Idempotent."""
    return set_status(database, serial_or_id, "revoked")


def set_status(database: str | Path, serial_or_id: str, status: str) -> DeviceRecord:
    """``revoked``, ``quarantined`` or ``active`` (release from quarantine)."""
    with connect(database) as conn, transaction(conn):
        return fleet.set_status(conn, serial_or_id, status)


def request_rotation(database: str | Path, serial_or_id: str) -> DeviceRecord:
    """Admin-initiated key rotation: sessions end; the next session must bring a new key."""
    with connect(database) as conn, transaction(conn):
        return fleet.request_rotation(conn, serial_or_id)


def issue_enrol_code(database: str | Path, serial: str, ttl_s: float = 900.0) -> tuple[str, str]:
    """A single-use enrolment code for a registered serial: (code, expires_at)."""
    with connect(database) as conn, transaction(conn):
        return fleet.issue_enrol_code(conn, serial, ttl_s)


def get_device(database: str | Path, serial_or_id: str) -> DeviceRecord:
    """Return one device by serial or device id."""
    with connect(database) as conn:
        return fleet.find(conn, serial_or_id)


def list_devices(database: str | Path, **filters: Any) -> list[DeviceRecord]:
    """Devices ordered by site, gate and serial (filters: site, gate, status, serial_prefix)."""
    with connect(database) as conn:
        return fleet.list_records(conn, **filters)


def online(record: DeviceRecord, offline_after_s: float, now: datetime | None = None) -> bool:
    """Whether the device sent a heartbeat within ``offline_after_s``."""
    if not record.last_seen_at:
        return False
    seen = datetime.fromisoformat(record.last_seen_at)
    return ((now or datetime.now(UTC)) - seen).total_seconds() <= offline_after_s


def status_rows(records: Sequence[DeviceRecord], offline_after_s: float) -> list[dict[str, Any]]:
    """``kiosk provision status`` rows: online/offline, last heartbeat, version, clock skew."""
    now = datetime.now(UTC)
    return [
        {
            "serial": r.serial,
            "device_id": r.device_id,
            "site": r.site,
            "status": r.status,
            "enrolled": r.enrolled,
            "online": online(r, offline_after_s, now),
            "last_seen_at": r.last_seen_at,
            "version": r.version,
            "clock_skew_s": r.clock_skew_s,
        }
        for r in records
    ]
