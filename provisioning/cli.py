"""``kiosk provision …``: fleet administration, on the server's database or through its API.

Verbs: ``init``, ``site add|list``, ``add`` (one kiosk, or ``--csv`` for thousands),
``enrol-code``, ``revoke``, ``quarantine``, ``release``, ``rotate``, ``list``, ``status``,
``config set|list``. Where the fleet is: ``--database PATH`` or ``--config FILE`` (the
server's database file, as ``kiosk server`` finds it), else ``--server-url URL`` (the admin
API, from any machine: ``--admin USER``, the token kept in a 0600 file), else ``siheyi.db``
here. ``init`` works on the database only: it creates the first administrator. Private keys
are generated here in both modes and only ever go into bundle files (0600); stdout shows
paths. Exit status: 0 done, 1 refused (bad rows, unknown device, bad field, bundle problem),
2 configuration, database, connection or login problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import msgspec

from core.rows import rows_text
from core.settings import REMOTE_SETTINGS
from core.wire_admin import ConfigSetRequest, RowFailure
from provisioning import registry
from provisioning.backend import FleetBackend, LocalOpener
from provisioning.errors import InvalidField, ProvisioningError
from provisioning.remote import RemoteFleet, password_source

Verb = Callable[[argparse.Namespace], int]
STATUSES = ("active", "quarantined", "revoked")


def _remote(args: argparse.Namespace) -> bool:
    return bool(args.server_url) and not (args.database or args.config)


def _fleet(args: argparse.Namespace) -> FleetBackend:
    """The admin API for ``--server-url`` alone, else the local database."""
    if _remote(args):
        return RemoteFleet(
            args.server_url,
            user=args.admin,
            password=password_source(args.password_file),
            tls_ca=args.tls_ca,
        )
    if args.admin or args.password_file:
        raise InvalidField("--admin and --password-file go with --server-url (remote mode)")
    fleet: FleetBackend = args.local_fleet(args.config, args.database)
    return fleet


def _bundle_urls(args: argparse.Namespace) -> tuple[str | None, str]:
    """(override, fallback) of a new bundle's URL: locally ``--server-url`` overrides the
    fleet's; remotely it names the administrator's route to the server, which is only the
    fallback when the fleet has no URL of its own."""
    if _remote(args):
        return None, args.server_url
    return args.server_url, registry.DEFAULT_SERVER_URL


#: The admin API's advice (its request fields) as this command line's options: the same
#: refusal reads right in both modes (server/fleet/registry.py words it for the API).
API_TO_CLI = (
    ("register the site first, or set create_sites", "kiosk provision site add, or --create-sites"),
    ("set rekey to give it a new key", "use --rekey"),
    ("(register the site first)", "(kiosk provision site add)"),
)


def cli_words(text: str) -> str:
    """``text`` with the admin API's field names replaced by the options that set them."""
    for api, cli in API_TO_CLI:
        text = text.replace(api, cli)
    return text


def _run(args: argparse.Namespace, work: Callable[[FleetBackend], int]) -> int:
    """Reach the fleet, run ``work``, map errors to messages and exit statuses."""
    return _refusals(lambda: work(_fleet(args)))


def _refusals(work: Callable[[], int]) -> int:
    """Run ``work``; a provisioning error is its message on stderr and its exit status (a
    reader that stops early, ``| head``, is handled for every verb by siheyi.cli)."""
    try:
        return work()
    except ProvisioningError as exc:
        print(f"error: {cli_words(str(exc))}", file=sys.stderr)
        return exc.exit_status


class StderrProgress:
    """A one-line progress bar on stderr (only on a terminal, or when forced)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width if total == 0 else int(width * done / total)
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r{stage:<11} [{bar}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


# --- init, sites -------------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    tls_ca = None
    if args.tls_ca:
        try:
            tls_ca = Path(args.tls_ca).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidField(f"--tls-ca {args.tls_ca}: {exc}") from exc
        if "BEGIN CERTIFICATE" not in tls_ca:
            raise InvalidField(f"--tls-ca {args.tls_ca}: not a PEM certificate")
    url = registry.check_url(args.server_url) if args.server_url else None
    admin = None
    if args.admin:
        admin = (args.admin, password_source(args.password_file, confirm=True)(args.admin))
    fleet = args.local_fleet(args.config, args.database)
    configured = fleet.init_fleet(server_url=url, tls_ca=tls_ca, admin=admin)
    print(f"fleet ready in {fleet.database}: server_url {configured or '(not set)'}")
    if args.admin:
        print(f"administrator {args.admin} set (argon2id)")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Fleet settings (server URL, fleet CA), the fleet keys, and an administrator.

    Always on the database: the first administrator cannot log in to create itself.
    """
    return _refusals(lambda: _init(args))


def cmd_site(args: argparse.Namespace) -> int:
    """``site add NAME…`` / ``site list``."""

    def work(fleet: FleetBackend) -> int:
        if args.site_verb == "add":
            added = fleet.add_sites(args.names).added
            print(f"{len(added)} site(s) added, {len(args.names) - len(added)} existed")
        else:
            for site in fleet.list_sites().sites:
                print(site)
        return 0

    return _run(args, work)


# --- add ---------------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace) -> int:
    """One kiosk (``--serial``) or a CSV of thousands (``--csv``)."""
    if args.csv:
        return _add_csv(args)
    missing = [f"--{n}" for n in ("serial", "site") if not getattr(args, n)]
    if args.rekey and not args.bundle:
        missing.append("--bundle (--rekey writes the new key there)")
    if missing:
        print(f"error: add needs --csv FILE, or {', '.join(missing)}", file=sys.stderr)
        return 2
    if not args.bundle:
        return _preregister(args)

    def work(fleet: FleetBackend) -> int:
        override, fallback = _bundle_urls(args)
        bundle = registry.add_device(
            fleet,
            args.serial,
            args.site,
            args.gate,
            args.location,
            server_url=override,
            fallback_url=fallback,
            rekey=args.rekey,
            bundle_path=args.bundle,
        )
        action = "re-keyed" if args.rekey else "added"
        print(f"{action} device {bundle.device_id} (serial {bundle.serial}, site {bundle.site})")
        print(f"bundle written to {args.bundle} (mode 0600; it holds the kiosk's private key)")
        return 0

    return _run(args, work)


def _preregister(args: argparse.Namespace) -> int:
    """``add --serial S --site X`` without ``--bundle``: the kiosk makes its own key and
    enrols with a code (as ``add --csv`` without ``--bundle-dir``)."""

    def work(fleet: FleetBackend) -> int:
        row = registry.preregister_device(fleet, args.serial, args.site, args.gate, args.location)
        print(f"added device {row.device_id} (serial {row.serial}, site {args.site}): no key yet")
        print(
            f"next: kiosk provision enrol-code {row.serial}; on the kiosk: kiosk device enrol"
            f" --server-url URL --serial {row.serial} --code CODE --out DIR"
        )
        return 0

    return _run(args, work)


def _add_csv(args: argparse.Namespace) -> int:
    progress = StderrProgress(args.progress or sys.stderr.isatty())

    def work(fleet: FleetBackend) -> int:
        override, fallback = _bundle_urls(args)
        result = registry.add_from_csv(
            fleet,
            args.csv,
            bundle_dir=args.bundle_dir,
            server_url=override,
            fallback_url=fallback,
            create_sites=args.create_sites,
            dry_run=args.dry_run,
            all_or_nothing=args.all_or_nothing,
            progress=progress,
        )
        report = result.report
        if args.json:
            errors = [msgspec.structs.replace(e, error=cli_words(e.error)) for e in report.errors]
            _print_json(msgspec.structs.replace(report, errors=errors))
        else:
            for line in grouped_errors(report.errors):
                print(f"{args.csv}: {cli_words(line)}")
            print(_csv_summary(result, dry_run=args.dry_run))
            if result.bundles:
                print(f"{len(result.bundles)} bundle(s) written to {args.bundle_dir} (mode 0600)")
        return 1 if report.errors else 0

    return _run(args, work)


def grouped_errors(errors: Sequence[RowFailure]) -> list[str]:
    """``row N: reason`` per refused row, rows with the same reason on one line
    (``rows 3, 7-9: unknown site 'x'``), in the order the reasons first occur."""
    rows: dict[str, list[int]] = {}
    for error in errors:
        rows.setdefault(registry.row_reason(error.error), []).append(error.row)
    return [f"{rows_text(numbers)}: {reason}" for reason, numbers in rows.items()]


def _csv_summary(result: registry.CsvResult, *, dry_run: bool) -> str:
    """One line: what happened to the rows, and plainly whether anything changed."""
    report = result.report
    changes = report.created + report.updated
    if result.applied:
        counts = f"{report.created} created, {report.updated} updated"
        verdict = "" if changes else "; nothing changed"
    else:
        counts = f"{report.created} to create, {report.updated} to update"
        if dry_run:
            verdict = "; dry run, nothing written" if changes else "; nothing would change"
        else:
            verdict = "; nothing written (--all-or-nothing: some rows are refused)"
    return (
        f"{result.rows} row(s): {counts}, {report.unchanged} unchanged,"
        f" {len(report.errors)} refused{verdict}"
    )


def _print_json(value: Any) -> None:
    print(json.dumps(msgspec.to_builtins(value), ensure_ascii=False, indent=2))


# --- per-device verbs ----------------------------------------------------------------------


def cmd_enrol_code(args: argparse.Namespace) -> int:
    """A single-use, short-lived enrolment code for a registered serial."""

    def work(fleet: FleetBackend) -> int:
        code, expires = registry.issue_enrol_code(fleet, args.serial, args.ttl * 60)
        print(f"enrolment code for {args.serial}: {code} (single use, expires {expires})")
        return 0

    return _run(args, work)


def _status_verb(status: str, verb: str) -> Verb:
    def cmd(args: argparse.Namespace) -> int:
        def work(fleet: FleetBackend) -> int:
            record = registry.set_status(fleet, args.serial_or_id, status)
            print(f"{verb} device {record.device_id} (serial {record.serial})")
            return 0

        return _run(args, work)

    cmd.__doc__ = f"Set a device {status} (effective on its next request)."
    return cmd


def cmd_rotate(args: argparse.Namespace) -> int:
    """Admin-initiated key rotation: sessions end; the kiosk must register a new key."""

    def work(fleet: FleetBackend) -> int:
        record = registry.request_rotation(fleet, args.serial_or_id)
        print(
            f"rotation requested for device {record.device_id} (serial {record.serial}):"
            " its next session must register a new key"
        )
        return 0

    return _run(args, work)


def _filters(args: argparse.Namespace) -> dict[str, str | None]:
    return {
        "site": args.site,
        "gate": args.gate,
        "status": args.status,
        "serial_prefix": args.serial_prefix,
    }


def cmd_list(args: argparse.Namespace) -> int:
    """List devices as a table or JSON."""

    def work(fleet: FleetBackend) -> int:
        devices = registry.list_devices(fleet, **_filters(args))
        if args.json:
            _print_json(devices)
            return 0
        print(
            f"{'DEVICE':<14} {'SERIAL':<20} {'SITE':<16} {'GATE':<8} {'STATUS':<12}"
            f" {'KEY':<8} LAST SEEN"
        )
        for d in devices:
            key = ("rotate" if d.rotate_pending else "yes") if d.enrolled else "no"
            seen = d.last_seen_at or "-"
            print(
                f"{d.device_id:<14} {d.serial:<20} {d.site:<16} {d.gate:<8} {d.status:<12}"
                f" {key:<8} {seen}"
            )
        return 0

    return _run(args, work)


def cmd_status(args: argparse.Namespace) -> int:
    """Online/offline (last heartbeat), versions, and the health each kiosk reports (reader,
    journal backlog, clock); ``--offline`` / ``--unhealthy`` keep only those (both: either)."""

    def work(fleet: FleetBackend) -> int:
        devices = registry.list_devices(fleet, **_filters(args))
        limits = registry.HealthLimits(args.backlog, args.max_skew)
        rows = _selected(registry.status_rows(devices, args.offline_after, limits), args)
        if args.json:
            _print_json(rows)
            return 0
        _print_status(rows)
        return 0

    return _run(args, work)


def _selected(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    if not (args.offline or args.unhealthy):
        return rows
    return [
        r
        for r in rows
        if (args.offline and not r["online"]) or (args.unhealthy and not r["healthy"])
    ]


#: The column headings of ``kiosk provision status`` (SKEW: the server's clock minus the
#: kiosk's at its last heartbeat, in seconds, as the server stores it and docs/api.md's
#: ``clock_skew_s`` says; positive means the kiosk's clock is behind).
STATUS_HEADER = (
    f"{'SERIAL':<20} {'SITE':<16} {'GATE':<8} {'STATUS':<12} {'STATE':<8} {'LAST SEEN':<26}"
    f" {'VERSION':<10} {'READER':<7} {'BACKLOG':>7} {'SKEW':>8}  PROBLEMS"
)

#: The line under the table that says which way SKEW counts (a sign nobody can guess).
SKEW_LEGEND = "SKEW: server clock minus kiosk clock at the last heartbeat (+: kiosk is behind)"


def _print_status(rows: list[dict[str, Any]]) -> None:
    online = sum(1 for r in rows if r["online"])
    unhealthy = sum(1 for r in rows if not r["healthy"])
    versions: dict[str, int] = {}
    for r in rows:
        versions[r["version"] or "-"] = versions.get(r["version"] or "-", 0) + 1
    print(
        f"{len(rows)} device(s): {online} online, {len(rows) - online} offline,"
        f" {unhealthy} unhealthy"
    )
    print("versions: " + (", ".join(f"{v} × {n}" for v, n in sorted(versions.items())) or "-"))
    print(STATUS_HEADER)
    for r in rows:
        state = "online" if r["online"] else "offline"
        backlog = "-" if r["journal_backlog"] is None else str(r["journal_backlog"])
        skew = "-" if r["clock_skew_s"] is None else f"{r['clock_skew_s']:+.1f}s"
        print(
            f"{r['serial']:<20} {r['site']:<16} {r['gate'] or '-':<8} {r['status']:<12} {state:<8}"
            f" {r['last_seen_at'] or '-':<26} {r['version'] or '-':<10} {r['reader'] or '-':<7}"
            f" {backlog:>7} {skew:>8}  {'; '.join(r['problems']) or '-'}"
        )
    print(SKEW_LEGEND)


def cmd_config(args: argparse.Namespace) -> int:
    """``config set KEY VALUE --fleet|--site S|--device SERIAL`` / ``config list``."""

    def work(fleet: FleetBackend) -> int:
        if args.config_verb == "list":
            _print_json(fleet.config().layers)
            return 0
        try:
            value = json.loads(args.value)
        except ValueError:
            value = args.value  # a bare word is a string
        if args.site:
            request = ConfigSetRequest(scope="site", target=args.site, key=args.key, value=value)
        elif args.device:
            request = ConfigSetRequest(
                scope="device", target=args.device, key=args.key, value=value
            )
        else:
            request = ConfigSetRequest(scope="fleet", key=args.key, value=value)
        version = fleet.set_config(request).config_version
        where = "fleet" if request.scope == "fleet" else f"{request.scope} {request.target}"
        print(f"{args.key} set for {where}; fleet config version {version}")
        return 0

    return _run(args, work)


VERBS: dict[str, Verb] = {
    "init": cmd_init,
    "site": cmd_site,
    "add": cmd_add,
    "enrol-code": cmd_enrol_code,
    "revoke": _status_verb("revoked", "revoked"),
    "quarantine": _status_verb("quarantined", "quarantined"),
    "release": _status_verb("active", "released"),
    "rotate": cmd_rotate,
    "list": cmd_list,
    "status": cmd_status,
    "config": cmd_config,
}


def _add_location_options(parser: argparse.ArgumentParser, *, has_url: bool = False) -> None:
    """Where the fleet is: the database (``--config``/``--database``) or the admin API."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the server's TOML configuration; its [server] database is used",
    )
    parser.add_argument(
        "--database",
        metavar="PATH|URL",
        help="the server's SQLite file or postgresql:// URL (overrides the config; default"
        " siheyi.db here)",
    )
    if not has_url:
        parser.add_argument(
            "--server-url", metavar="URL", help="remote mode: the server's admin API"
        )
    parser.add_argument("--admin", metavar="USER", help="remote mode: log in as this admin")
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help="remote mode: the admin password (else $SIHEYI_ADMIN_PASSWORD, else a prompt)",
    )
    parser.add_argument(
        "--tls-ca", metavar="FILE", help="remote mode: CA (PEM) for the server's certificate"
    )


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", metavar="SITE", help="only kiosks of this site")
    parser.add_argument("--gate", metavar="GATE", help="only kiosks at this gate")
    parser.add_argument(
        "--status", choices=STATUSES, help="only kiosks in this status: %(choices)s"
    )
    parser.add_argument(
        "--serial-prefix", metavar="PREFIX", help="only kiosks whose serial starts with PREFIX"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(subparsers: Subparsers, local: LocalOpener) -> None:
    """Add ``provision`` and its verbs to the top-level ``kiosk`` parser; ``local`` opens the
    fleet's database (the command line that owns both packages supplies it)."""
    provision = subparsers.add_parser("provision", help="fleet: register, enrol, revoke kiosks")
    verbs = provision.add_subparsers(dest="provision_verb", metavar="VERB", required=True)
    parsers = {
        "init": _init_parser(verbs),
        "site": verbs.add_parser("site", help="register and list sites"),
        "add": _add_parser(verbs),
        **_device_parsers(verbs),
        "config": verbs.add_parser("config", help="layered kiosk configuration"),
    }
    leaves = [*_site_leaves(parsers["site"]), *_config_leaves(parsers["config"])]
    for name, parser in parsers.items():
        parser.set_defaults(func=VERBS[name], local_fleet=local)
        if name == "init":
            parser.add_argument("--config", metavar="FILE", help="the server's configuration")
            parser.add_argument(
                "--database",
                metavar="PATH|URL",
                help="the server's SQLite file or postgresql:// URL",
            )
        elif name not in ("site", "config"):
            _add_location_options(parser, has_url=name == "add")
    for leaf in leaves:
        _add_location_options(leaf)


def _init_parser(verbs: Subparsers) -> argparse.ArgumentParser:
    init = verbs.add_parser("init", help="fleet settings and an administrator")
    init.add_argument("--server-url", metavar="URL", help="URL written into new bundles")
    init.add_argument("--tls-ca", metavar="FILE", help="fleet CA (PEM) kiosks will pin")
    init.add_argument("--admin", metavar="USER", help="create or reset this administrator")
    init.add_argument(
        "--password-file",
        metavar="FILE",
        help="admin password from this file (else $SIHEYI_ADMIN_PASSWORD, else a prompt)",
    )
    return init


def _site_leaves(site: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    site_verbs = site.add_subparsers(dest="site_verb", required=True)
    site_add = site_verbs.add_parser("add", help="register sites")
    site_add.add_argument(
        "names", nargs="+", metavar="SITE", help="site name(s); existing ones are left as they are"
    )
    return [site_add, site_verbs.add_parser("list", help="list sites")]


def _add_parser(verbs: Subparsers) -> argparse.ArgumentParser:
    add = verbs.add_parser("add", help="register one kiosk (--serial) or a CSV of kiosks (--csv)")
    add.add_argument("--csv", metavar="FILE", help="serial,site,gate,location[,…] per row")
    add.add_argument("--bundle-dir", metavar="DIR", help="--csv: write new kiosks' bundles here")
    add.add_argument("--dry-run", action="store_true", help="--csv: report, change nothing")
    add.add_argument("--create-sites", action="store_true", help="--csv: register unknown sites")
    add.add_argument(
        "--all-or-nothing", action="store_true", help="--csv: apply nothing if any row is bad"
    )
    add.add_argument("--progress", action="store_true", help="--csv: progress bar on stderr")
    add.add_argument("--json", action="store_true", help="--csv: the report as JSON")
    add.add_argument("--serial", metavar="SERIAL", help="the kiosk's serial number (one kiosk)")
    add.add_argument(
        "--site", metavar="SITE", help="the kiosk's site (one kiosk; created if unknown)"
    )
    add.add_argument(
        "--gate", default="", metavar="GATE", help="the gate at the site (one kiosk; optional)"
    )
    add.add_argument(
        "--location",
        default="",
        metavar="TEXT",
        help="where the kiosk stands, free text (one kiosk; optional)",
    )
    add.add_argument(
        "--server-url",
        metavar="URL",
        help="the URL in the bundle (default: the fleet's); alone: remote mode, the admin API",
    )
    add.add_argument(
        "--bundle",
        metavar="FILE",
        help="the bundle file to write (one kiosk; mode 0600); without it the kiosk makes its"
        " own key and enrols with a code (enrol-code)",
    )
    add.add_argument(
        "--rekey", action="store_true", help="give an existing serial a new key (one kiosk)"
    )
    # the name from before kiosks had keys of their own: still accepted, no longer shown
    add.add_argument("--rotate-secret", dest="rekey", action="store_true", help=argparse.SUPPRESS)
    return add


def _device_parsers(verbs: Subparsers) -> dict[str, argparse.ArgumentParser]:
    parsers = {}
    code = parsers["enrol-code"] = verbs.add_parser(
        "enrol-code", help="single-use enrolment code for a registered serial"
    )
    code.add_argument("serial", metavar="SERIAL", help="a registered kiosk's serial")
    code.add_argument(
        "--ttl",
        type=float,
        default=15.0,
        metavar="MINUTES",
        help="how long the code stays valid (default 15)",
    )
    for name, text in (
        ("revoke", "revoke a kiosk for good (effective on its next request)"),
        ("quarantine", "refuse a kiosk until released (effective on its next request)"),
        ("release", "release a quarantined kiosk"),
        ("rotate", "require a new key at the kiosk's next session"),
    ):
        parsers[name] = verbs.add_parser(name, help=text)
        parsers[name].add_argument(
            "serial_or_id", metavar="SERIAL_OR_ID", help="the kiosk's serial or device id"
        )
    _add_filters(parsers.setdefault("list", verbs.add_parser("list", help="list kiosks")))
    status = parsers["status"] = verbs.add_parser(
        "status", help="online/offline, versions, reported health (reader, backlog, clock)"
    )
    _add_filters(status)
    status.add_argument(
        "--offline-after",
        type=float,
        default=120.0,
        metavar="S",
        help="offline: no heartbeat for S seconds (default 120)",
    )
    status.add_argument("--offline", action="store_true", help="only kiosks that are offline")
    status.add_argument(
        "--unhealthy",
        action="store_true",
        help="only kiosks reporting a problem (reader, camera or audio fault, untrusted clock,"
        " skew, journal backlog or full, server unreachable)",
    )
    status.add_argument(
        "--backlog",
        type=int,
        default=registry.BACKLOG_LIMIT,
        metavar="N",
        help=f"a journal backlog from N events is a problem (default {registry.BACKLOG_LIMIT})",
    )
    status.add_argument(
        "--max-skew",
        type=float,
        default=registry.SKEW_LIMIT_S,
        metavar="S",
        help=f"a clock skew beyond S seconds is a problem (default {registry.SKEW_LIMIT_S:g})",
    )
    return parsers


#: The voice's remote settings as ``config set`` explains them (core/settings.py checks them;
#: docs/voice-packs.md).
VOICE_SETTINGS = (
    ("voice.pack", 'a published pack\'s sha256, or "" for none: kiosk voice pack publish'),
    ("voice.volume_schedule", '[{"start": "22:00", "end": "07:00", "gain_db": -10}]'),
    ("voice.languages", '{"I": "en", "Y": "en", "J": ""}'),
)


def _config_leaves(config: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    config_verbs = config.add_subparsers(dest="config_verb", required=True)
    config_set = config_verbs.add_parser("set", help="set KEY to VALUE (JSON or a bare word)")
    settable = ", ".join(
        [f"{key} ({low:g}-{high:g})" for key, (low, high) in sorted(REMOTE_SETTINGS.items())]
        + [f"{key} ({what})" for key, what in VOICE_SETTINGS]
    )
    config_set.add_argument(
        "key", metavar="KEY", help=f"the setting; kiosks apply only: {settable}"
    )
    config_set.add_argument(
        "value", metavar="VALUE", help='JSON (1.0, true, "text") or a bare word; null removes it'
    )
    layer = config_set.add_mutually_exclusive_group(required=True)
    layer.add_argument("--fleet", action="store_true", help="for every kiosk")
    layer.add_argument("--site", metavar="SITE", help="for the kiosks of SITE (over --fleet)")
    layer.add_argument("--device", metavar="SERIAL", help="for one kiosk (over --site and --fleet)")
    return [config_set, config_verbs.add_parser("list", help="every layer's keys")]
