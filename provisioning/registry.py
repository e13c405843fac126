"""The device registry as files and commands: add kiosks (one or a CSV of thousands), write
their bundles, revoke, quarantine, rotate, list.

A kiosk's identity is its own Ed25519 key pair (docs/identity.md). Provisioning generates the
pair, here on the administrator's machine in both modes; the fleet only ever receives the
public half. A bundle is one JSON file per kiosk, mode 0600: device id, serial, placement,
server URL, the pseudonym key of the kiosk's own site (field ``site_key``; ``fleet_key``
before, still written for old kiosks), the server's snapshot public key, the fleet CA (PEM,
optional) and the kiosk's private key. There is no fleet-wide secret in a bundle: the
pseudonym key is per site, only keys the HMAC pseudonyms of that site's cache, journal and
snapshots, and authenticates nothing.

Every function takes a :class:`~provisioning.backend.FleetBackend`: the server's database
(local) or its admin API (remote).
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from core.bundle import Bundle, bundle_text
from core.wire_admin import (
    BulkAnswer,
    BulkRequest,
    DeviceAction,
    DeviceInfo,
    Registered,
    RegisterRequest,
    RowDone,
    RowFailure,
)
from provisioning import keygen
from provisioning.backend import FleetBackend
from provisioning.errors import (
    BundleError,
    CsvFormatError,
    DeviceNotFound,
    InvalidField,
    SerialExists,
)

__all__ = [
    "CsvResult",
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
#: A CSV row: its fields by column name, or why it cannot be used (``row N: …``).
CsvRow = dict[str, str] | str

#: A kiosk's bundle, as :mod:`core.bundle` defines it for both ends.
DeviceBundle = Bundle
#: A device as the fleet reports it (never a key).
DeviceRecord = DeviceInfo


def check_url(server_url: str) -> str:
    """An http(s) URL with a host, without a trailing slash."""
    url = urlsplit(server_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise InvalidField(f"server_url must be an http(s) URL, got {server_url!r}")
    return server_url.rstrip("/")


def _bundle(registered: Registered, url: str, pair: tuple[bytes, bytes]) -> DeviceBundle:
    private, public = pair
    return DeviceBundle(
        device_id=registered.device_id,
        serial=registered.serial,
        site=registered.site,
        gate=registered.gate,
        server_url=url,
        site_key=registered.site_key,
        server_key=registered.server_key,
        private_key=private.hex(),
        public_key=public.hex(),
        tls_ca=registered.tls_ca,
    )


# --- one kiosk ---------------------------------------------------------------------------


def add_device(
    fleet: FleetBackend,
    serial: str,
    site: str,
    gate: str = "",
    location: str = "",
    *,
    server_url: str | None = None,
    fallback_url: str = DEFAULT_SERVER_URL,
    rekey: bool = False,
    rotate_secret: bool = False,
    bundle_path: str | Path | None = None,
) -> DeviceBundle:
    """Register one kiosk by serial with a fresh key pair and return its bundle.

    The bundle's URL is ``server_url``, else the fleet's configured one, else
    ``fallback_url``. The site is created if needed. An existing serial is refused
    (:class:`~provisioning.errors.SerialExists`) unless ``rekey`` (old name:
    ``rotate_secret``): then the device keeps its id, gets a new key pair (the old key and its
    sessions stop working) and its placement is updated. A revoked device cannot be re-keyed.

    With ``bundle_path`` the bundle is also written there (0600), all or nothing: a temporary
    file next to the target is created first (an unwritable place fails before anything is
    registered), filled and synced before the registration commits where the fleet allows it
    (locally), and renamed into place afterwards. An existing ``bundle_path`` is refused
    (:class:`~provisioning.errors.BundleError`) unless re-keying.
    """
    rekey = rekey or rotate_secret
    if server_url is not None:
        check_url(server_url)
    pair = keygen.generate_raw(1)[0]
    request = RegisterRequest(
        site=site, gate=gate, location=location, public_key=pair[1].hex(), rekey=rekey
    )
    staged = _StagedBundle(Path(bundle_path)) if bundle_path is not None else None
    if staged is not None and not fleet.atomic and not rekey:
        staged.refuse_existing()  # the server commits before the hook: refuse up front
    made: list[DeviceBundle] = []

    def before_commit(registered: Registered) -> None:
        url = check_url(server_url or registered.server_url or fallback_url)
        made.append(_bundle(registered, url, pair))
        if staged is not None:
            if not rekey:
                staged.refuse_existing()
            staged.write(made[0], registered=not fleet.atomic)

    try:
        fleet.register(serial, request, before_commit)
    except BaseException:
        if staged is not None:
            staged.discard()
        raise
    if staged is not None:
        staged.publish()
    return made[0]


def preregister_device(
    fleet: FleetBackend, serial: str, site: str, gate: str = "", location: str = ""
) -> RowDone:
    """Register one kiosk *without* a key: it makes its own and enrols with a code
    (``kiosk provision enrol-code``, then ``kiosk device enrol`` on the kiosk), as ``add --csv``
    without ``--bundle-dir`` does for many. No private key ever leaves the kiosk.

    Like :func:`add_device` the site is created if needed and a known serial is refused
    (:class:`~provisioning.errors.SerialExists`): a preview first, so that nothing is changed
    when the serial exists (an upsert alone would move the existing kiosk).
    """
    row = {"serial": serial, "site": site, "gate": gate, "location": location}
    request = BulkRequest(devices=[row], rows=[1], create_sites=True, dry_run=True)
    preview = _one_row(fleet.upsert(request))
    if preview.action != "created":
        raise SerialExists(
            f"serial exists: {serial} is device {preview.device_id}"
            " (give it a new key with --bundle FILE --rekey)"
        )
    return _one_row(fleet.upsert(msgspec.structs.replace(request, dry_run=False)))


def _one_row(answer: BulkAnswer) -> RowDone:
    """The single row of a one-device upsert, or its refusal as an error."""
    if answer.errors:
        raise InvalidField(row_reason(answer.errors[0].error))
    return answer.devices[0]


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

    def refuse_existing(self) -> None:
        """A new kiosk's bundle never replaces a file that may hold another kiosk's key."""
        if self.target.exists():
            self.discard()
            raise BundleError(
                f"bundle exists: {self.target} (it may hold another kiosk's key;"
                " remove it or use --rekey)"
            )

    def write(self, bundle: DeviceBundle | Mapping[str, Any], *, registered: bool = False) -> None:
        """Fill and sync the temporary file; ``registered``: the fleet already committed."""
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(bundle_text(bundle))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            done = " (the device is registered: add it again with --rekey)" if registered else ""
            raise BundleError(
                f"cannot write bundle {self.target}: {exc.strerror or exc}{done}"
            ) from exc

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


def write_bundle(bundle: DeviceBundle | Mapping[str, Any], path: str | Path) -> Path:
    """Write ``bundle`` as JSON, readable by its owner only (0600), atomically."""
    staged = _StagedBundle(Path(path))
    try:
        staged.write(bundle)
    except BaseException:
        staged.discard()
        raise
    staged.publish()
    return staged.target


# --- bulk: CSV ---------------------------------------------------------------------------


def read_device_csv(path: str | Path) -> list[tuple[int, CsvRow]]:
    """Read a device CSV (``serial,site,gate,location[,…]``) into rows by line number.

    Row numbers are CSV line numbers (header = 1). A row with more or fewer fields than the
    header is refused here (``row N: …``); the fields themselves are checked by the fleet,
    so that both modes refuse the same rows with the same words. A file without a usable
    header raises :class:`CsvFormatError`.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvFormatError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise CsvFormatError(f"{path}: {exc.strerror or exc}") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = _csv_header(reader, path)
    rows: list[tuple[int, CsvRow]] = []
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows.append((reader.line_num, f"row {reader.line_num}: {exc}"))
            break
        line = reader.line_num
        if not fields or fields == [""]:
            continue
        if len(fields) != len(header):
            n = len(fields)
            plural = "" if n == 1 else "s"
            rows.append((line, f"row {line}: {n} field{plural}, the header has {len(header)}"))
        else:
            rows.append((line, dict(zip(header, fields, strict=True))))
    return rows


def _csv_header(reader: Any, path: str | Path) -> list[str]:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise CsvFormatError(
            f"{path}: empty file (expected a header serial,site,gate,location)"
        ) from None
    except csv.Error as exc:
        raise CsvFormatError(f"{path}: line 1: {exc}") from exc
    missing = [c for c in ("serial", "site") if c not in header]
    if missing:
        raise CsvFormatError(f"{path}: header lacks column(s) {', '.join(missing)}")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates or "" in header:
        raise CsvFormatError(f"{path}: header has empty or repeated column names {duplicates}")
    return header


@dataclass
class CsvResult:
    """A bulk add: the per-row report and where the new bundles went."""

    report: BulkAnswer
    bundles: list[Path] = field(default_factory=list)
    applied: bool = True

    @property
    def rows(self) -> int:
        """How many rows the report covers."""
        return len(self.report.devices) + len(self.report.errors)


def add_from_csv(
    fleet: FleetBackend,
    csv_path: str | Path,
    *,
    bundle_dir: str | Path | None = None,
    server_url: str | None = None,
    fallback_url: str = DEFAULT_SERVER_URL,
    create_sites: bool = False,
    dry_run: bool = False,
    all_or_nothing: bool = False,
    progress: Progress | None = None,
) -> CsvResult:
    """Upsert the devices of a CSV file keyed by serial, in one request (one transaction).

    Bad rows are reported (row number, serial, reason) and skipped; the others are applied
    together, or — with ``all_or_nothing`` — nothing is applied when any row is bad. With
    ``bundle_dir`` every *new* device without a public key in the file gets a key pair and a
    bundle ``<serial>.json`` (0600) there; without it new devices are pre-registered and enrol
    on the kiosk with a code. Bundles are written to a staging directory before the commit
    where the fleet allows it (locally) and moved into place after it, so a failure leaves
    neither registrations nor bundles behind.
    """
    note = progress or (lambda stage, done, total: None)
    rows = read_device_csv(csv_path)
    note("validated", len(rows), len(rows))
    if server_url is not None:
        check_url(server_url)
    out_dir = Path(bundle_dir) if bundle_dir is not None else None
    preview = _upsert(fleet, rows, create_sites=create_sites, dry_run=True)
    if out_dir is not None:
        rows = _refuse_existing_bundles(rows, preview, out_dir)
        preview = _upsert(fleet, rows, create_sites=create_sites, dry_run=True)
    if dry_run or (all_or_nothing and preview.errors):
        return CsvResult(preview, applied=False)
    writer = None
    if out_dir is not None:
        keyless = _keyless_new_rows(rows, preview)
        if keyless:
            keys = dict(zip(keyless, keygen.generate_many(len(keyless)), strict=True))
            note("keys", len(keys), len(keys))
            rows = [(n, _with_key(r, keys.get(n))) for n, r in rows]
            url = (server_url, fallback_url)
            writer = _BundleWriter(out_dir, dict(rows), keys, url, fleet.atomic, note)
    report = _upsert(
        fleet, rows, create_sites=create_sites, before_commit=writer.stage if writer else None
    )
    note("registered", len(report.devices), len(report.devices))
    # the answer's bundle facts hold site keys: they went into the bundles, not the report
    report = msgspec.structs.replace(report, bundle=None)
    return CsvResult(report, writer.publish() if writer else [])


def _upsert(
    fleet: FleetBackend,
    rows: Sequence[tuple[int, CsvRow]],
    *,
    create_sites: bool,
    dry_run: bool = False,
    before_commit: Callable[[BulkAnswer], None] | None = None,
) -> BulkAnswer:
    """Send the usable rows; merge the fleet's report with the rows refused here."""
    usable = [(n, r) for n, r in rows if not isinstance(r, str)]
    refused = [RowFailure(row=n, action="error", error=r) for n, r in rows if isinstance(r, str)]
    if usable:
        request = BulkRequest(
            devices=[r for _, r in usable],
            rows=[n for n, _ in usable],
            dry_run=dry_run,
            create_sites=create_sites,
            bundle=before_commit is not None,
        )
        answer = fleet.upsert(request, before_commit)
    else:
        answer = BulkAnswer(
            dry_run=dry_run, created=0, updated=0, unchanged=0, errors=[], devices=[]
        )
    errors = sorted([*answer.errors, *refused], key=lambda e: e.row)
    errors = [
        msgspec.structs.replace(e, error=f"row {e.row}: {row_reason(e.error)}") for e in errors
    ]
    return msgspec.structs.replace(answer, errors=errors)


_ROW_PREFIX = re.compile(r"\A(?:row \d+|devices\[\d+\]): ")


def row_reason(error: str) -> str:
    """A refused row's reason without its ``row N:`` (or ``devices[i]:``) prefix.

    The fleet prefixes the rows it could not read and not those it refused on their merits;
    the report gives every row one ``row N:`` of its own, and groups rows by this reason.
    """
    return _ROW_PREFIX.sub("", error, count=1)


def _refuse_existing_bundles(
    rows: list[tuple[int, CsvRow]], preview: BulkAnswer, out_dir: Path
) -> list[tuple[int, CsvRow]]:
    """A new device whose bundle file already exists is refused: never clobber a key."""
    taken = {
        d.row: f"row {d.row}: bundle file {out_dir / (d.serial + '.json')} exists"
        for d in preview.devices
        if d.action == "created" and (out_dir / f"{d.serial}.json").exists()
    }
    return [(n, taken.get(n, r)) for n, r in rows]


def _keyless_new_rows(rows: Sequence[tuple[int, CsvRow]], preview: BulkAnswer) -> list[int]:
    """Rows of new devices that bring no public key of their own: they get a key pair."""
    created = {d.row for d in preview.devices if d.action == "created"}
    return [
        n
        for n, row in rows
        if n in created and isinstance(row, dict) and not row.get("public_key", "").strip()
    ]


def _with_key(row: CsvRow, pair: tuple[bytes, bytes] | None) -> CsvRow:
    if pair is None or isinstance(row, str):
        return row
    return {**row, "public_key": pair[1].hex()}


class _BundleWriter:
    """Bundles of the devices a bulk upsert created: staged, then moved into place."""

    def __init__(
        self,
        out_dir: Path,
        rows: dict[int, CsvRow],
        keys: dict[int, tuple[bytes, bytes]],
        url: tuple[str | None, str],
        atomic: bool,
        note: Progress,
    ) -> None:
        self.out_dir, self.rows, self.keys = out_dir, rows, keys
        self.url, self.atomic, self.note = url, atomic, note
        self.items: list[tuple[str, str]] = []
        self.staging: Path | None = None

    def stage(self, answer: BulkAnswer) -> None:
        """Write every new device's bundle into a staging directory (synced)."""
        self.staging = _staging_dir(self.out_dir)
        try:
            self.items = [
                (str(self.staging / f"{b.serial}.json"), bundle_text(b))
                for b in self._bundles(answer)
            ]
            keygen.write_many(self.items)
        except OSError as exc:
            shutil.rmtree(self.staging, ignore_errors=True)
            registered = "" if self.atomic else " (the devices are registered)"
            raise BundleError(
                f"cannot write bundles to {self.out_dir}: {exc.strerror or exc}{registered}"
            ) from exc
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
        self.note("bundles", len(self.items), len(self.items))

    def _bundles(self, answer: BulkAnswer) -> list[DeviceBundle]:
        assert answer.bundle is not None
        facts = answer.bundle
        url = check_url(self.url[0] or facts.server_url or self.url[1])
        out = []
        for done in answer.devices:
            row = self.rows.get(done.row)
            if done.action != "created" or done.row not in self.keys or not isinstance(row, dict):
                continue
            site = row["site"].strip()
            registered = Registered(
                device_id=done.device_id or "",
                serial=done.serial,
                site=site,
                gate=(row.get("gate") or "").strip(),
                server_url=url,
                server_key=facts.server_key,
                tls_ca=facts.tls_ca,
                site_key=facts.site_keys[site],
            )
            out.append(_bundle(registered, url, self.keys[done.row]))
        return out

    def publish(self) -> list[Path]:
        """Move the staged bundles into place (after the commit)."""
        paths = []
        for tmp, _ in self.items:
            target = self.out_dir / Path(tmp).name
            os.replace(tmp, target)
            paths.append(target)
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        return paths


def _staging_dir(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = out_dir / f".staging-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
    except OSError as exc:
        raise BundleError(f"cannot write bundles to {out_dir}: {exc.strerror or exc}") from exc
    return staging


# --- status, listing ---------------------------------------------------------------------

_ACTIONS: dict[str, DeviceAction] = {
    "revoked": "revoke",
    "quarantined": "quarantine",
    "active": "release",
}


def revoke_device(fleet: FleetBackend, serial_or_id: str) -> DeviceRecord:
    """Revoke a device by serial or device id (final). Idempotent."""
    return fleet.act(serial_or_id, "revoke")


def set_status(fleet: FleetBackend, serial_or_id: str, status: str) -> DeviceRecord:
    """``revoked``, ``quarantined`` or ``active`` (release from quarantine)."""
    if status not in _ACTIONS:
        raise InvalidField(f"status must be one of {', '.join(_ACTIONS)}")
    return fleet.act(serial_or_id, _ACTIONS[status])


def request_rotation(fleet: FleetBackend, serial_or_id: str) -> DeviceRecord:
    """Admin-initiated key rotation: sessions end; the next session must bring a new key."""
    return fleet.act(serial_or_id, "rotate")


def issue_enrol_code(
    fleet: FleetBackend, serial: str, ttl_s: float | None = None
) -> tuple[str, str]:
    """A single-use enrolment code for a registered serial: (code, expires_at)."""
    answer = fleet.enrol_code(serial, ttl_s)
    return answer.code, answer.expires_at


def get_device(fleet: FleetBackend, serial_or_id: str) -> DeviceRecord:
    """One device by device id or serial (the id wins when both match)."""
    devices = fleet.devices().devices
    for found in (
        [d for d in devices if d.device_id == serial_or_id],
        [d for d in devices if d.serial == serial_or_id],
    ):
        if found:
            return found[0]
    raise DeviceNotFound(f"no device with serial or id {serial_or_id!r}")


def list_devices(fleet: FleetBackend, **filters: str | None) -> list[DeviceRecord]:
    """Devices ordered by site, gate and serial (filters: site, gate, status, serial_prefix)."""
    return fleet.devices(**filters).devices


def online(record: DeviceRecord, offline_after_s: float, now: datetime | None = None) -> bool:
    """Whether the device sent a heartbeat within ``offline_after_s``."""
    if not record.last_seen_at:
        return False
    seen = datetime.fromisoformat(record.last_seen_at)
    return ((now or datetime.now(UTC)) - seen).total_seconds() <= offline_after_s


#: ``kiosk provision status --unhealthy`` limits: a journal backlog as the alerts' default
#: (server/alerts/settings.py ``backlog_threshold``) and a clock skew in seconds.
BACKLOG_LIMIT = 500
SKEW_LIMIT_S = 30.0


@dataclass(frozen=True)
class HealthLimits:
    """Where reported health turns into a problem."""

    backlog: int = BACKLOG_LIMIT
    skew_s: float = SKEW_LIMIT_S


def health_problems(record: DeviceRecord, limits: HealthLimits) -> list[str]:
    """What is wrong in what a kiosk last reported, in words; empty when nothing is (or
    nothing was reported: an offline kiosk is offline, not unhealthy).

    The health is the board's summary of the last heartbeat (``health`` of the admin API's
    device; absent from servers older than issue 12).
    """
    health: Mapping[str, Any] = getattr(record, "health", None) or {}
    problems = [
        f"{part} fault" for part in ("reader", "camera", "audio") if health.get(part) == "fault"
    ]
    if health.get("clock_trusted") is False:
        problems.append("clock not trusted")
    skew = record.clock_skew_s
    if skew is not None and abs(skew) > limits.skew_s:
        problems.append(f"clock skew {skew:+.1f} s")
    backlog = health.get("journal_backlog")
    if isinstance(backlog, int) and backlog >= limits.backlog:
        problems.append(f"journal backlog {backlog}")
    if health.get("journal_full"):
        problems.append("journal full")
    if health.get("circuit") == "open":
        problems.append("server unreachable (circuit open)")
    return problems


def status_rows(
    records: Sequence[DeviceRecord], offline_after_s: float, limits: HealthLimits | None = None
) -> list[dict[str, Any]]:
    """``kiosk provision status`` rows: online/offline, last heartbeat, version, clock skew,
    and the health the kiosk reported (reader, journal backlog, clock) with its problems."""
    now = datetime.now(UTC)
    limits = limits or HealthLimits()
    rows = []
    for r in records:
        health: Mapping[str, Any] = getattr(r, "health", None) or {}
        problems = health_problems(r, limits)
        rows.append(
            {
                "serial": r.serial,
                "device_id": r.device_id,
                "site": r.site,
                "gate": r.gate,
                "status": r.status,
                "enrolled": r.enrolled,
                "online": online(r, offline_after_s, now),
                "last_seen_at": r.last_seen_at,
                "version": r.version,
                "clock_skew_s": r.clock_skew_s,
                "reader": health.get("reader"),
                "journal_backlog": health.get("journal_backlog"),
                "clock_trusted": health.get("clock_trusted"),
                "healthy": not problems,
                "problems": problems,
            }
        )
    return rows
