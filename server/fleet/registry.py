"""The fleet registry in SQL: devices, sites, enrolment codes, status, layered configuration.

Every function takes an open connection and runs inside the caller's transaction, so the
admin API (on the server's database thread) and the local provisioning backend
(:mod:`server.fleet.local_backend`, on the file) share one implementation; both answer in the
wire models of :mod:`core.wire_admin`. Nothing here ever sees a private key: devices are
registered with their *public* key, or without one until they enrol.

Every change of a device's status, key or placement bumps ``devices.change_seq`` (a
fleet-wide counter); server processes refresh their cached device states from it
(server/fleet/sessions.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from core.errors import SettingError
from core.settings import check_remote_setting
from core.wire_admin import (
    BulkAnswer,
    BundleFacts,
    ConfigLayer,
    ConfigLayers,
    DeviceInfo,
    Registered,
    RowAction,
    RowDone,
    RowFailure,
)
from server.errors import (
    DeviceNotFound,
    DeviceRevoked,
    EnrolRefused,
    InvalidField,
    RowError,
    SerialExists,
    UnknownSite,
)
from server.fleet.health import health_of
from server.offline.keys import server_public_key, site_key
from server.storage.connection import Connection
from server.voicepacks import store as voice_packs

SERIAL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
PUBLIC_KEY = re.compile(r"[0-9a-f]{64}")
CONFIG_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31}){0,3}")
STATUSES = ("active", "quarantined", "revoked")
SCOPES = ("fleet", "site", "device")
#: Columns a bulk row may carry besides these are kept as free-form ``extra`` (JSON).
KNOWN_COLUMNS = ("serial", "site", "gate", "location", "public_key")
MAX_EXTRA_BYTES = 2048
#: Enrolment codes: 10 characters of an alphabet without 0/O/1/I/L (≈ 50 bits).
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 10


#: What to do about a refused row, in the admin API's own words (its fields, never a command
#: line flag: ``kiosk provision`` translates them into its options).
UNKNOWN_SITE_HINT = "register the site first, or set create_sites"
SERIAL_EXISTS_HINT = "set rekey to give it a new key"
REGISTER_SITE_HINT = "register the site first"


def now_iso(now: datetime | None = None) -> str:
    """UTC, ISO 8601 to the second (text order is time order)."""
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")


# --- devices ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceRow:
    """One validated device to register or update (a CSV row or an API item)."""

    serial: str
    site: str
    gate: str = ""
    location: str = ""
    public_key: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceRecord:
    """A registry row as admins see it: never a key, only whether there is one."""

    device_id: str
    serial: str
    site: str
    gate: str
    location: str
    status: str
    created_at: str
    last_seen_at: str | None
    enrolled: bool = False
    rotate_pending: bool = False
    version: str | None = None
    clock_skew_s: float | None = None
    health: dict[str, Any] | None = None


_RECORD_COLUMNS = (
    "device_id, serial, site, gate, location, status, created_at, last_seen_at,"
    " public_key IS NOT NULL, rotate_pending, last_heartbeat, clock_skew_s"
)


def _record(row: Sequence[Any]) -> DeviceRecord:
    version = None
    if row[10]:
        try:
            heartbeat = json.loads(row[10])
            version = heartbeat.get("version") if isinstance(heartbeat, dict) else None
        except ValueError:
            version = None
    return DeviceRecord(
        device_id=row[0],
        serial=row[1],
        site=row[2],
        gate=row[3],
        location=row[4],
        status=row[5],
        created_at=row[6],
        last_seen_at=row[7],
        enrolled=bool(row[8]),
        rotate_pending=bool(row[9]),
        version=str(version) if version is not None else None,
        clock_skew_s=row[11],
        health=health_of(row[10], row[11]) if row[10] else None,
    )


def clean_field(name: str, value: object, *, required: bool, max_len: int = 100) -> str:
    """Strip and bound a text field; :class:`InvalidField` names the field."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidField(f"{name} must be a string")
    value = value.strip()
    if required and not value:
        raise InvalidField(f"{name} must not be empty")
    if len(value) > max_len or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidField(f"{name} must be at most {max_len} printable characters")
    return value


def clean_serial(serial: object) -> str:
    """A serial number: 1-64 of ``A-Z a-z 0-9 _ . : -``."""
    if not isinstance(serial, str) or SERIAL.fullmatch(serial.strip()) is None:
        raise InvalidField("serial must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    return serial.strip()


def device_row(item: Mapping[str, object]) -> DeviceRow:
    """Validate one bulk item (CSV row or JSON object); extra columns become ``extra``."""
    serial = clean_serial(item.get("serial"))
    site = clean_field("site", item.get("site"), required=True)
    gate = clean_field("gate", item.get("gate"), required=False)
    location = clean_field("location", item.get("location"), required=False, max_len=200)
    public_key = item.get("public_key") or None
    if public_key is not None and (
        not isinstance(public_key, str) or PUBLIC_KEY.fullmatch(public_key) is None
    ):
        raise InvalidField("public_key must be 64 lower-case hex digits (raw Ed25519)")
    extra: dict[str, str] = {}
    for key, value in item.items():
        if key in KNOWN_COLUMNS or key is None:
            continue
        extra[clean_field("column name", key, required=True, max_len=64)] = clean_field(
            str(key), value, required=False, max_len=200
        )
    if len(json.dumps(extra, ensure_ascii=False).encode()) > MAX_EXTRA_BYTES:
        raise InvalidField(f"extra columns exceed {MAX_EXTRA_BYTES} bytes")
    return DeviceRow(serial, site, gate, location, public_key, extra)


def next_change_seq(conn: Connection, count: int = 1) -> int:
    """Reserve ``count`` consecutive change numbers; return the first (inside a transaction)."""
    row = conn.execute("SELECT COALESCE(MAX(change_seq), 0) FROM devices").fetchone()
    return int(row[0]) + 1


def new_device_ids(conn: Connection, count: int) -> list[str]:
    """``count`` fresh, unused device ids (``k-`` + 10 hex digits)."""
    taken = {row[0] for row in conn.execute("SELECT device_id FROM devices")}
    out: list[str] = []
    while len(out) < count:
        candidate = "k-" + secrets.token_hex(5)
        if candidate not in taken:
            taken.add(candidate)
            out.append(candidate)
    return out


@dataclass
class RowResult:
    """What happened to one row of a bulk registration."""

    row: int  # 1-based position in the input (CSV: line number, header = 1)
    serial: str
    action: str  # created | updated | unchanged | error
    device_id: str | None = None
    error: str = ""


@dataclass
class BulkReport:
    """Per-row outcome of :func:`upsert_devices` (errors are per row, never half a row)."""

    results: list[RowResult] = field(default_factory=list)
    dry_run: bool = False

    def count(self, action: str) -> int:
        return sum(1 for r in self.results if r.action == action)

    @property
    def errors(self) -> list[RowResult]:
        return [r for r in self.results if r.action == "error"]


def upsert_devices(
    conn: Connection,
    rows: Sequence[tuple[int, DeviceRow | RowError]],
    *,
    create_sites: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> BulkReport:
    """Register or update devices keyed by serial; bad rows are reported and skipped.

    ``rows`` pairs each input position with a validated :class:`DeviceRow` or the
    :class:`RowError` its validation raised. Refused per row: validation errors, a serial
    appearing more than once in the input (every occurrence), an unknown site (unless
    ``create_sites``), an update of a revoked device, a public key that differs from the
    registered one (key changes go through enrolment or rotation). The rest is applied by the
    caller's transaction, all together; with ``dry_run`` nothing is written and new devices
    get no device id (``None``): an id is chosen when the device is created, and one shown by
    a dry run would never exist.
    """
    report = BulkReport(dry_run=dry_run)
    plan = _plan(conn, rows, create_sites, report)
    if dry_run:  # an id handed out now would never exist: new devices have none yet
        return report
    ids = new_device_ids(conn, len(plan.new))
    for (created, _), device_id in zip(plan.new, ids, strict=True):
        created.device_id = device_id
    _apply(conn, plan, now_iso(now))
    return report


@dataclass
class _Plan:
    """What a bulk upsert will write: new devices, updates (with whether a key is added)."""

    new: list[tuple[RowResult, DeviceRow]] = field(default_factory=list)
    updates: list[tuple[RowResult, DeviceRow, bool]] = field(default_factory=list)
    new_sites: set[str] = field(default_factory=set)


def _plan(
    conn: Connection,
    rows: Sequence[tuple[int, DeviceRow | RowError]],
    create_sites: bool,
    report: BulkReport,
) -> _Plan:
    """Decide every row (appending its result to ``report``) without writing anything."""
    counts: dict[str, int] = {}
    for _, item in rows:
        if isinstance(item, DeviceRow):
            counts[item.serial] = counts.get(item.serial, 0) + 1
    sites = {row[0] for row in conn.execute("SELECT site FROM sites")}
    existing = _existing_by_serial(conn, list(counts))
    plan = _Plan()
    for position, item in rows:
        if isinstance(item, RowError):
            report.results.append(RowResult(position, "", "error", error=str(item)))
            continue
        result = RowResult(position, item.serial, "error")
        report.results.append(result)
        if counts[item.serial] > 1:
            result.error = f"serial {item.serial} appears {counts[item.serial]} times in the input"
        elif item.site not in sites and not create_sites:
            result.error = f"unknown site {item.site!r} ({UNKNOWN_SITE_HINT})"
        else:
            if item.site not in sites:
                plan.new_sites.add(item.site)
            _decide(result, item, existing.get(item.serial), plan)
    return plan


def _decide(
    result: RowResult,
    item: DeviceRow,
    current: tuple[str, str, str, str, str, str | None, str] | None,
    plan: _Plan,
) -> None:
    """Created, updated, unchanged or refused: one row against the device it names."""
    if current is None:
        result.action = "created"
        plan.new.append((result, item))
        return
    device_id, site, gate, location, extra, public_key, status = current
    result.device_id = device_id
    if status == "revoked":
        result.error = f"device {device_id} (serial {item.serial}) is revoked"
        return
    if item.public_key and public_key and item.public_key != public_key:
        result.error = "public_key differs from the registered key (use rotate or enrol)"
        return
    placement_changed = (site, gate, location) != (item.site, item.gate, item.location)
    key_added = bool(item.public_key) and not public_key
    if not placement_changed and not key_added and _extra_json(item) == extra:
        result.action = "unchanged"
        return
    result.action = "updated"
    plan.updates.append((result, item, key_added))


def _extra_json(item: DeviceRow) -> str:
    return json.dumps(dict(item.extra), sort_keys=True, ensure_ascii=False)


def _apply(conn: Connection, plan: _Plan, stamp: str) -> None:
    """Write a planned upsert: new sites, new devices, updated devices, one change each."""
    conn.executemany(
        "INSERT INTO sites (site) VALUES (?) ON CONFLICT (site) DO NOTHING",
        [(s,) for s in sorted(plan.new_sites)],
    )
    seq = next_change_seq(conn)
    conn.executemany(
        "INSERT INTO devices (device_id, serial, site, gate, location, extra, public_key,"
        " status, change_seq, created_at, enrolled_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'active',"
        " ?, ?, ?)",
        [
            (
                result.device_id,
                item.serial,
                item.site,
                item.gate,
                item.location,
                _extra_json(item),
                item.public_key,
                seq + n,
                stamp,
                stamp if item.public_key else None,
            )
            for n, (result, item) in enumerate(plan.new)
        ],
    )
    seq += len(plan.new)
    conn.executemany(
        "UPDATE devices SET site = ?, gate = ?, location = ?, extra = ?,"
        " public_key = COALESCE(public_key, ?), enrolled_at = COALESCE(enrolled_at, ?),"
        " change_seq = ?, updated_at = ? WHERE device_id = ?",
        [
            (
                item.site,
                item.gate,
                item.location,
                _extra_json(item),
                item.public_key,
                stamp if key_added else None,
                seq + n,
                stamp,
                result.device_id,
            )
            for n, (result, item, key_added) in enumerate(plan.updates)
        ],
    )


def _existing_by_serial(
    conn: Connection, serials: Iterable[str]
) -> dict[str, tuple[str, str, str, str, str, str | None, str]]:
    wanted = list(dict.fromkeys(serials))
    found: dict[str, tuple[str, str, str, str, str, str | None, str]] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            "SELECT serial, device_id, site, gate, location, extra, public_key, status"
            f" FROM devices WHERE serial IN ({marks})",
            chunk,
        ):
            found[row[0]] = tuple(row[1:])
    return found


def find(conn: Connection, serial_or_id: str) -> DeviceRecord:
    """One device by device id or serial (the id wins when both match)."""
    row = conn.execute(
        f"SELECT {_RECORD_COLUMNS} FROM devices WHERE device_id = ? OR serial = ?"
        " ORDER BY CASE WHEN device_id = ? THEN 0 ELSE 1 END LIMIT 1",
        (serial_or_id, serial_or_id, serial_or_id),
    ).fetchone()
    if row is None:
        raise DeviceNotFound(f"no device with serial or id {serial_or_id!r}")
    return _record(row)


def list_records(
    conn: Connection,
    *,
    site: str | None = None,
    gate: str | None = None,
    status: str | None = None,
    serial_prefix: str | None = None,
) -> list[DeviceRecord]:
    """Devices ordered by site, gate and serial, filtered by any of the given fields."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("site", site), ("gate", gate), ("status", status)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if serial_prefix:
        where.append("substr(serial, 1, ?) = ?")
        args += [len(serial_prefix), serial_prefix]
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_RECORD_COLUMNS} FROM devices{clause} ORDER BY site, gate, serial", args
    )
    return [_record(row) for row in rows]


def set_status(
    conn: Connection, serial_or_id: str, status: str, now: datetime | None = None
) -> DeviceRecord:
    """Set ``active`` (release), ``quarantined`` or ``revoked``; revocation is final."""
    if status not in STATUSES:
        raise InvalidField(f"status must be one of {', '.join(STATUSES)}")
    record = find(conn, serial_or_id)
    if record.status == "revoked" and status != "revoked":
        raise DeviceRevoked(f"device {record.device_id} (serial {record.serial}) is revoked")
    if record.status != status:
        conn.execute(
            "UPDATE devices SET status = ?, change_seq = ?, updated_at = ? WHERE device_id = ?",
            (status, next_change_seq(conn), now_iso(now), record.device_id),
        )
    return find(conn, record.device_id)


def request_rotation(
    conn: Connection, serial_or_id: str, now: datetime | None = None
) -> DeviceRecord:
    """Admin-initiated rotation: current sessions end; the next one must bring a new key."""
    record = find(conn, serial_or_id)
    if record.status == "revoked":
        raise DeviceRevoked(f"device {record.device_id} (serial {record.serial}) is revoked")
    conn.execute(
        "UPDATE devices SET rotate_pending = 1, key_epoch = key_epoch + 1, change_seq = ?,"
        " updated_at = ? WHERE device_id = ?",
        (next_change_seq(conn), now_iso(now), record.device_id),
    )
    return find(conn, record.device_id)


def replace_key(
    conn: Connection, device_id: str, public_key: str, now: datetime | None = None
) -> int:
    """Install a new public key (rotation or enrolment); return the new key epoch."""
    stamp = now_iso(now)
    conn.execute(
        "UPDATE devices SET public_key = ?, rotate_pending = 0, key_epoch = key_epoch + 1,"
        " enrolled_at = ?, change_seq = ?, updated_at = ? WHERE device_id = ?",
        (public_key, stamp, next_change_seq(conn), stamp, device_id),
    )
    row = conn.execute("SELECT key_epoch FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    return int(row[0])


# --- sites -----------------------------------------------------------------------------


def add_sites(conn: Connection, names: Iterable[str]) -> list[str]:
    """Register sites (idempotent); return the ones that were new."""
    added = []
    for name in names:
        site = clean_field("site", name, required=True)
        cur = conn.execute(
            "INSERT INTO sites (site) VALUES (?) ON CONFLICT (site) DO NOTHING", (site,)
        )
        if cur.rowcount:
            added.append(site)
    return added


def list_sites(conn: Connection) -> list[str]:
    """Every registered site, sorted."""
    return [row[0] for row in conn.execute("SELECT site FROM sites ORDER BY site")]


def require_site(conn: Connection, site: str) -> None:
    """Raise :class:`UnknownSite` unless ``site`` is registered."""
    if conn.execute("SELECT 1 FROM sites WHERE site = ?", (site,)).fetchone() is None:
        raise UnknownSite(f"unknown site {site!r} ({REGISTER_SITE_HINT})")


# --- enrolment codes -------------------------------------------------------------------


def code_hash(code: str) -> str:
    """The stored form of an enrolment code (normalised: upper case, no dashes or blanks)."""
    return hashlib.sha256(normalise_code(code).encode()).hexdigest()


def normalise_code(code: str) -> str:
    """Upper-case and drop separators, so ``abcd-efgh-jk`` and ``ABCDEFGHJK`` are one code."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def issue_enrol_code(
    conn: Connection, serial: str, ttl_s: float = 900.0, now: datetime | None = None
) -> tuple[str, str]:
    """A single-use enrolment code for a registered, non-revoked serial; (code, expires_at).

    Earlier unused codes of the serial stop working: only the newest code is valid.
    """
    record = find(conn, clean_serial(serial))
    if record.serial != serial.strip():
        raise DeviceNotFound(f"no device with serial {serial!r}")
    if record.status == "revoked":
        raise DeviceRevoked(f"device {record.device_id} (serial {record.serial}) is revoked")
    if not 60 <= ttl_s <= 7 * 86400:
        raise InvalidField("code lifetime must be between 60 s and 7 days")
    moment = now or datetime.now(UTC)
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    expires = now_iso(moment + timedelta(seconds=ttl_s))
    conn.execute(
        "UPDATE enrol_codes SET used_at = ? WHERE serial = ? AND used_at IS NULL",
        ("superseded:" + now_iso(moment), record.serial),
    )
    conn.execute(
        "INSERT INTO enrol_codes (code_hash, serial, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (code_hash(code), record.serial, now_iso(moment), expires),
    )
    return f"{code[:5]}-{code[5:]}", expires


def redeem_enrol_code(
    conn: Connection,
    serial: str,
    code: str,
    public_key: str,
    now: datetime | None = None,
) -> tuple[DeviceRecord, int]:
    """Bind ``public_key`` to the serial's device if ``code`` is valid for it; burn the code.

    Refusals (:class:`EnrolRefused` with the API error code): ``bad_code`` (unknown),
    ``replay`` (already used or superseded), ``code_expired``, ``wrong_serial`` (the code was
    issued for another serial; the code stays valid), ``revoked``. A quarantined device may
    enrol (its key is replaced) but stays quarantined. Returns the device and its key epoch.
    """
    moment = now or datetime.now(UTC)
    row = conn.execute(
        "SELECT serial, expires_at, used_at FROM enrol_codes WHERE code_hash = ?",
        (code_hash(code),),
    ).fetchone()
    if row is None:
        raise EnrolRefused("bad_code", "unknown enrolment code", 401)
    bound_serial, expires_at, used_at = row
    if bound_serial != serial:
        raise EnrolRefused("wrong_serial", "this code was issued for another serial number")
    if used_at is not None:
        raise EnrolRefused("replay", "this enrolment code has already been used", 409)
    if expires_at <= now_iso(moment):
        raise EnrolRefused("code_expired", "this enrolment code has expired", 401)
    record = find(conn, serial)
    if record.status == "revoked":
        raise EnrolRefused("revoked", "this device has been revoked")
    claimed = conn.execute(
        "UPDATE enrol_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL",
        (now_iso(moment), code_hash(code)),
    )
    if claimed.rowcount != 1:  # pragma: no cover - another process won the race
        raise EnrolRefused("replay", "this enrolment code has already been used", 409)
    epoch = replace_key(conn, record.device_id, public_key, moment)
    return find(conn, record.device_id), epoch


# --- fleet settings and layered configuration ------------------------------------------


def get_setting(conn: Connection, key: str, default: str = "") -> str:
    """A fleet setting (``server_url``, ``tls_ca``, ``config_version``)."""
    row = conn.execute("SELECT value FROM fleet_settings WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else default


def set_setting(conn: Connection, key: str, value: str) -> None:
    """Store a fleet setting."""
    conn.execute(
        "INSERT INTO fleet_settings (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def set_config(
    conn: Connection,
    scope: str,
    target: str,
    key: str,
    value: Any,
    now: datetime | None = None,
) -> int:
    """Set one configuration key at a layer; return the fleet's new config version.

    ``scope`` is ``fleet`` (target ''), ``site`` (a registered site) or ``device`` (a serial
    or device id; stored under the device id). ``value`` is any JSON value; ``None`` removes
    the key from that layer.
    """
    if scope not in SCOPES:
        raise InvalidField(f"scope must be one of {', '.join(SCOPES)}")
    if CONFIG_KEY.fullmatch(key) is None:
        raise InvalidField(
            f"config key {key!r}: lower-case words of [a-z0-9_] joined by dots"
            " (e.g. verify.deadline_s)"
        )
    if value is not None:
        try:
            check_remote_setting(key, value)
        except SettingError as exc:  # the kiosks would ignore it: refuse it here
            raise InvalidField(str(exc)) from exc
        _require_pack(conn, key, value)
    if scope == "fleet":
        target = ""
    elif scope == "site":
        require_site(conn, target)
    else:
        target = find(conn, target).device_id
    version = int(get_setting(conn, "config_version", "0")) + 1
    set_setting(conn, "config_version", str(version))
    if value is None:
        conn.execute(
            "DELETE FROM fleet_config WHERE scope = ? AND target = ? AND key = ?",
            (scope, target, key),
        )
        return version
    conn.execute(
        "INSERT INTO fleet_config (scope, target, key, value, version, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, target, key) DO UPDATE SET"
        " value = excluded.value, version = excluded.version, updated_at = excluded.updated_at",
        (scope, target, key, json.dumps(value, ensure_ascii=False), version, now_iso(now)),
    )
    return version


def _require_pack(conn: Connection, key: str, value: Any) -> None:
    """A ``voice.pack`` must name a stored pack ("" is none): kiosks could not download
    another, and would keep asking for it at every heartbeat."""
    if key == "voice.pack" and value and not voice_packs.exists(conn, value):
        raise InvalidField(f"no voice pack {value[:12]}…: {voice_packs.PUBLISH_FIRST}")


def merged_config(conn: Connection, device_id: str) -> tuple[int, dict[str, Any]]:
    """The device's configuration: fleet < site < device; (fleet config version, values)."""
    version = int(get_setting(conn, "config_version", "0"))
    row = conn.execute("SELECT site FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    site = row[0] if row else None
    rank = {"fleet": 0, "site": 1, "device": 2}
    rows = conn.execute(
        "SELECT scope, key, value FROM fleet_config WHERE (scope = 'fleet')"
        " OR (scope = 'site' AND target = ?) OR (scope = 'device' AND target = ?)",
        (site, device_id),
    ).fetchall()
    merged: dict[str, Any] = {}
    for _scope, key, value in sorted(rows, key=lambda r: rank[r[0]]):
        merged[key] = json.loads(value)
    return version, merged


def config_layers(conn: Connection) -> list[dict[str, Any]]:
    """Every configured key of every layer (``kiosk provision config list``)."""
    rows = conn.execute(
        "SELECT scope, target, key, value, version, updated_at FROM fleet_config"
        " ORDER BY CASE scope WHEN 'fleet' THEN 0 WHEN 'site' THEN 1 ELSE 2 END, target, key"
    )
    return [
        {
            "scope": r[0],
            "target": r[1],
            "key": r[2],
            "value": json.loads(r[3]),
            "version": r[4],
            "updated_at": r[5],
        }
        for r in rows
    ]


# --- answers as wire models (the admin API and the local provisioning backend) -----------


def validated_rows(
    items: Sequence[Any], numbers: Sequence[int] | None = None
) -> list[tuple[int, DeviceRow | RowError]]:
    """Bulk items (JSON objects or CSV rows) as rows for :func:`upsert_devices`.

    Without ``numbers`` a row is its 1-based position and messages name ``devices[i]``; with
    them (the caller's CSV line numbers) rows and messages use those numbers, so a report
    reads the same whether the CSV went through the admin API or straight to the database.
    """
    if numbers is not None and len(numbers) != len(items):
        raise InvalidField("rows: must have one number per device")
    out: list[tuple[int, DeviceRow | RowError]] = []
    for index, item in enumerate(items):
        number = numbers[index] if numbers is not None else index + 1
        where = f"row {number}" if numbers is not None else f"devices[{index}]"
        if not isinstance(item, dict):
            out.append((number, RowError(f"{where}: must be an object")))
        elif "private_key" in item:
            out.append((number, RowError(f"{where}: never send a private key")))
        else:
            try:
                out.append((number, device_row(item)))
            except InvalidField as exc:
                out.append((number, RowError(f"{where}: {exc}")))
    return out


def bulk_answer(report: BulkReport, bundle: BundleFacts | None = None) -> BulkAnswer:
    """The report of :func:`upsert_devices` as the admin API answers it."""
    return BulkAnswer(
        dry_run=report.dry_run,
        created=report.count("created"),
        updated=report.count("updated"),
        unchanged=report.count("unchanged"),
        errors=[
            RowFailure(
                row=r.row, serial=r.serial, action="error", device_id=r.device_id, error=r.error
            )
            for r in report.errors
        ],
        devices=[
            RowDone(r.row, r.serial, r.device_id, cast(RowAction, r.action))
            for r in report.results
            if r.action != "error"
        ],
        bundle=bundle,
    )


def bundle_facts(conn: Connection, sites: Iterable[str]) -> BundleFacts:
    """What new bundles of these sites need; creates a site's pseudonym key on first use."""
    return BundleFacts(
        server_url=get_setting(conn, "server_url"),
        server_key=server_public_key(conn),
        tls_ca=get_setting(conn, "tls_ca"),
        site_keys={site: site_key(conn, site) for site in sorted(set(sites))},
    )


def created_sites(rows: Sequence[tuple[int, DeviceRow | RowError]], report: BulkReport) -> set[str]:
    """The sites of the devices a bulk upsert created."""
    created = {r.row for r in report.results if r.action == "created"}
    return {item.site for n, item in rows if n in created and isinstance(item, DeviceRow)}


def register_device(conn: Connection, row: DeviceRow, *, rekey: bool) -> Registered:
    """One kiosk with its new public key (``row.public_key``); the site is created if needed.

    A known serial raises :class:`SerialExists` unless ``rekey``: then the device keeps its
    id, its placement is updated and the new key replaces the old one (its sessions end). A
    revoked device cannot be re-keyed.
    """
    assert row.public_key is not None
    add_sites(conn, [row.site])
    existing = conn.execute(
        "SELECT device_id, status FROM devices WHERE serial = ?", (row.serial,)
    ).fetchone()
    if existing is None:
        report = upsert_devices(conn, [(1, row)], create_sites=True)
        device_id = report.results[0].device_id
        assert device_id is not None
    elif not rekey:
        raise SerialExists(
            f"serial exists: {row.serial} is device {existing[0]} ({SERIAL_EXISTS_HINT})"
        )
    elif existing[1] == "revoked":
        raise DeviceRevoked(f"device {existing[0]} (serial {row.serial}) is revoked")
    else:
        device_id = existing[0]
        conn.execute(
            "UPDATE devices SET site = ?, gate = ?, location = ? WHERE device_id = ?",
            (row.site, row.gate, row.location, device_id),
        )
        replace_key(conn, device_id, row.public_key)
    facts = bundle_facts(conn, [row.site])
    return Registered(
        device_id=device_id,
        serial=row.serial,
        site=row.site,
        gate=row.gate,
        server_url=facts.server_url,
        server_key=facts.server_key,
        tls_ca=facts.tls_ca,
        site_key=facts.site_keys[row.site],
    )


def device_info(record: DeviceRecord) -> DeviceInfo:
    """A registry row as the admin API answers it."""
    return DeviceInfo(**asdict(record))


def device_action(conn: Connection, serial_or_id: str, action: str) -> DeviceInfo:
    """``revoke``, ``quarantine``, ``release`` or ``rotate`` one device."""
    if action == "rotate":
        return device_info(request_rotation(conn, serial_or_id))
    status = {"revoke": "revoked", "quarantine": "quarantined", "release": "active"}[action]
    return device_info(set_status(conn, serial_or_id, status))


def config_answer(conn: Connection) -> ConfigLayers:
    """Every configured key of every layer, as the admin API answers it."""
    return ConfigLayers([ConfigLayer(**layer) for layer in config_layers(conn)])
