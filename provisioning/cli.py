"""``kiosk provision …``: fleet administration straight on the server's database file.

Verbs: ``init``, ``site add|list``, ``add`` (one kiosk, or ``--csv`` for thousands),
``enrol-code``, ``revoke``, ``quarantine``, ``release``, ``rotate``, ``list``, ``status``,
``config set|list``. Private keys only ever go into bundle files (0600); stdout shows paths.
Exit status: 0 done, 1 refused (bad rows, unknown device, bad field, bundle problem),
2 configuration or database problem.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provisioning import registry
from server.cli import DATABASE_ERRORS, add_database_options, config_error, database_error
from server.config import resolve_database
from server.errors import ConfigError, FleetError
from server.fleet import registry as fleet
from server.storage.db import connect, transaction

Verb = Callable[[argparse.Namespace], int]


def _database(args: argparse.Namespace) -> str:
    return resolve_database(args.config, args.database)


def _run(args: argparse.Namespace, work: Callable[[str], int]) -> int:
    """Resolve the database, run ``work``, map errors to messages and exit statuses."""
    try:
        database = _database(args)
    except ConfigError as exc:
        return config_error(exc)
    try:
        return work(database)
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DATABASE_ERRORS as exc:
        return database_error(database, exc)


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


def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        return Path(args.password_file).read_text(encoding="utf-8").strip()
    env = os.environ.get("SIHEYI_ADMIN_PASSWORD")
    if env:
        return env
    if not sys.stdin.isatty():
        # getpass would fall back to reading stdin with a warning, or die at EOF: a
        # scripted set-up must say where the password comes from.
        raise FleetError(
            "no terminal to ask for the admin password: use --password-file FILE or set "
            "SIHEYI_ADMIN_PASSWORD"
        )
    first = getpass.getpass(f"password for admin {args.admin}: ")
    if getpass.getpass("again: ") != first:
        raise FleetError("passwords differ")
    return first


def cmd_init(args: argparse.Namespace) -> int:
    """Fleet settings (server URL, fleet CA), the fleet keys, and an administrator."""
    from server.fleet.admin import create_admin, hash_password
    from server.offline.keys import signing_key

    def work(database: str) -> int:
        tls_ca = ""
        if args.tls_ca:
            tls_ca = Path(args.tls_ca).read_text(encoding="utf-8")
            if "BEGIN CERTIFICATE" not in tls_ca:
                raise FleetError(f"--tls-ca {args.tls_ca}: not a PEM certificate")
        password_hash = None
        if args.admin:
            try:
                password_hash = hash_password(_password(args))
            except ValueError as exc:
                raise FleetError(str(exc)) from exc
        with connect(database) as conn, transaction(conn):
            signing_key(conn)  # site pseudonym keys are created with each site's first bundle
            if args.server_url:
                fleet.set_setting(conn, "server_url", registry._check_url(args.server_url))
            if args.tls_ca:
                fleet.set_setting(conn, "tls_ca", tls_ca)
            if args.admin and password_hash:
                create_admin(conn, args.admin, password_hash, fleet.now_iso())
            url = fleet.get_setting(conn, "server_url") or "(not set)"
        print(f"fleet ready in {database}: server_url {url}")
        if args.admin:
            print(f"administrator {args.admin} set (argon2id)")
        return 0

    return _run(args, work)


def cmd_site(args: argparse.Namespace) -> int:
    """``site add NAME…`` / ``site list``."""

    def work(database: str) -> int:
        with connect(database) as conn, transaction(conn):
            if args.site_verb == "add":
                added = fleet.add_sites(conn, args.names)
                print(f"{len(added)} site(s) added, {len(args.names) - len(added)} existed")
            else:
                for site in fleet.list_sites(conn):
                    print(site)
        return 0

    return _run(args, work)


# --- add ---------------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace) -> int:
    """One kiosk (``--serial``) or a CSV of thousands (``--csv``)."""
    if args.csv:
        return _add_csv(args)
    missing = [f"--{n}" for n in ("serial", "site", "bundle") if not getattr(args, n)]
    if missing:
        print(f"error: add needs --csv FILE, or {', '.join(missing)}", file=sys.stderr)
        return 2

    def work(database: str) -> int:
        bundle = registry.add_device(
            database,
            args.serial,
            args.site,
            args.gate,
            args.location,
            server_url=args.server_url,
            rekey=args.rekey,
            bundle_path=args.bundle,
        )
        action = "re-keyed" if args.rekey else "added"
        print(f"{action} device {bundle.device_id} (serial {bundle.serial}, site {bundle.site})")
        print(f"bundle written to {args.bundle} (mode 0600; it holds the kiosk's private key)")
        return 0

    return _run(args, work)


def _add_csv(args: argparse.Namespace) -> int:
    progress = StderrProgress(args.progress or sys.stderr.isatty())

    def work(database: str) -> int:
        result = registry.add_from_csv(
            database,
            args.csv,
            bundle_dir=args.bundle_dir,
            server_url=args.server_url,
            create_sites=args.create_sites,
            dry_run=args.dry_run,
            all_or_nothing=args.all_or_nothing,
            progress=progress,
        )
        report = result.report
        if args.json:
            print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
        else:
            for error in report.errors:
                print(f"{args.csv}: {error.error}")
            verb = "would be" if not result.applied else "were"
            print(
                f"{len(report.results)} row(s): {report.count('created')} created,"
                f" {report.count('updated')} updated, {report.count('unchanged')} unchanged,"
                f" {len(report.errors)} refused; changes {verb} applied"
                + ("" if result.applied else " (nothing written)")
            )
            if result.bundles:
                print(f"{len(result.bundles)} bundle(s) written to {args.bundle_dir} (mode 0600)")
        return 1 if report.errors else 0

    return _run(args, work)


# --- per-device verbs ----------------------------------------------------------------------


def cmd_enrol_code(args: argparse.Namespace) -> int:
    """A single-use, short-lived enrolment code for a registered serial."""

    def work(database: str) -> int:
        code, expires = registry.issue_enrol_code(database, args.serial, args.ttl * 60)
        print(f"enrolment code for {args.serial}: {code} (single use, expires {expires})")
        return 0

    return _run(args, work)


def _status_verb(status: str, verb: str) -> Verb:
    def cmd(args: argparse.Namespace) -> int:
        def work(database: str) -> int:
            record = registry.set_status(database, args.serial_or_id, status)
            print(f"{verb} device {record.device_id} (serial {record.serial})")
            return 0

        return _run(args, work)

    cmd.__doc__ = f"Set a device {status} (effective on its next request)."
    return cmd


def cmd_rotate(args: argparse.Namespace) -> int:
    """Admin-initiated key rotation: sessions end; the kiosk must register a new key."""

    def work(database: str) -> int:
        record = registry.request_rotation(database, args.serial_or_id)
        print(
            f"rotation requested for device {record.device_id} (serial {record.serial}):"
            " its next session must register a new key"
        )
        return 0

    return _run(args, work)


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "site": args.site,
        "gate": args.gate,
        "status": args.status,
        "serial_prefix": args.serial_prefix,
    }


def cmd_list(args: argparse.Namespace) -> int:
    """List devices as a table or JSON."""

    def work(database: str) -> int:
        devices = registry.list_devices(database, **_filters(args))
        if args.json:
            print(json.dumps([d.to_json() for d in devices], ensure_ascii=False, indent=2))
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
    """Online/offline (last heartbeat), software versions and clock skew."""

    def work(database: str) -> int:
        devices = registry.list_devices(database, **_filters(args))
        rows = registry.status_rows(devices, args.offline_after)
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
            return 0
        online = sum(1 for r in rows if r["online"])
        versions: dict[str, int] = {}
        for r in rows:
            versions[r["version"] or "-"] = versions.get(r["version"] or "-", 0) + 1
        print(f"{len(rows)} device(s): {online} online, {len(rows) - online} offline")
        print("versions: " + ", ".join(f"{v} × {n}" for v, n in sorted(versions.items())))
        for r in rows:
            state = "online" if r["online"] else "offline"
            print(
                f"{r['serial']:<20} {r['site']:<16} {r['status']:<12} {state:<8}"
                f" {r['last_seen_at'] or '-':<26} {r['version'] or '-'}"
            )
        return 0

    return _run(args, work)


def cmd_config(args: argparse.Namespace) -> int:
    """``config set KEY VALUE --fleet|--site S|--device SERIAL`` / ``config list``."""

    def work(database: str) -> int:
        with connect(database) as conn, transaction(conn):
            if args.config_verb == "list":
                print(json.dumps(fleet.config_layers(conn), ensure_ascii=False, indent=2))
                return 0
            try:
                value = json.loads(args.value)
            except ValueError:
                value = args.value  # a bare word is a string
            if args.site:
                scope, target = "site", args.site
            elif args.device:
                scope, target = "device", args.device
            else:
                scope, target = "fleet", ""
            version = fleet.set_config(conn, scope, target, args.key, value)
        where = scope if scope == "fleet" else f"{scope} {target}"
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


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site")
    parser.add_argument("--gate")
    parser.add_argument("--status", choices=fleet.STATUSES)
    parser.add_argument("--serial-prefix", metavar="PREFIX")
    parser.add_argument("--json", action="store_true")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``provision`` and its verbs to the top-level ``kiosk`` parser."""
    provision = subparsers.add_parser("provision", help="fleet: register, enrol, revoke kiosks")
    verbs = provision.add_subparsers(dest="provision_verb", metavar="VERB", required=True)
    parsers: dict[str, argparse.ArgumentParser] = {}

    init = parsers["init"] = verbs.add_parser("init", help="fleet settings and an administrator")
    init.add_argument("--server-url", metavar="URL", help="URL written into new bundles")
    init.add_argument("--tls-ca", metavar="FILE", help="fleet CA (PEM) kiosks will pin")
    init.add_argument("--admin", metavar="USER", help="create or reset this administrator")
    init.add_argument(
        "--password-file",
        metavar="FILE",
        help="admin password from this file (else $SIHEYI_ADMIN_PASSWORD, else a prompt)",
    )

    site = parsers["site"] = verbs.add_parser("site", help="register and list sites")
    site_verbs = site.add_subparsers(dest="site_verb", required=True)
    site_add = site_verbs.add_parser("add", help="register sites")
    site_add.add_argument("names", nargs="+", metavar="SITE")
    site_verbs.add_parser("list", help="list sites")

    add = parsers["add"] = verbs.add_parser(
        "add", help="register one kiosk (--serial) or a CSV of kiosks (--csv)"
    )
    add.add_argument("--csv", metavar="FILE", help="serial,site,gate,location[,…] per row")
    add.add_argument("--bundle-dir", metavar="DIR", help="--csv: write new kiosks' bundles here")
    add.add_argument("--dry-run", action="store_true", help="--csv: report, change nothing")
    add.add_argument("--create-sites", action="store_true", help="--csv: register unknown sites")
    add.add_argument(
        "--all-or-nothing", action="store_true", help="--csv: apply nothing if any row is bad"
    )
    add.add_argument("--progress", action="store_true", help="--csv: progress bar on stderr")
    add.add_argument("--json", action="store_true", help="--csv: the report as JSON")
    add.add_argument("--serial")
    add.add_argument("--site")
    add.add_argument("--gate", default="")
    add.add_argument("--location", default="")
    add.add_argument("--server-url", metavar="URL", help="default: the fleet's (init)")
    add.add_argument("--bundle", metavar="FILE", help="bundle file to write")
    add.add_argument(
        "--rekey", "--rotate-secret", action="store_true", help="give an existing serial a new key"
    )

    code = parsers["enrol-code"] = verbs.add_parser(
        "enrol-code", help="single-use enrolment code for a registered serial"
    )
    code.add_argument("serial", metavar="SERIAL")
    code.add_argument("--ttl", type=float, default=15.0, metavar="MINUTES", help="default 15")

    for name, text in (
        ("revoke", "revoke a kiosk for good (effective on its next request)"),
        ("quarantine", "refuse a kiosk until released (effective on its next request)"),
        ("release", "release a quarantined kiosk"),
        ("rotate", "require a new key at the kiosk's next session"),
    ):
        parsers[name] = verbs.add_parser(name, help=text)
        parsers[name].add_argument("serial_or_id", metavar="SERIAL_OR_ID")

    lst = parsers["list"] = verbs.add_parser("list", help="list kiosks")
    _add_filters(lst)
    status = parsers["status"] = verbs.add_parser("status", help="online/offline, versions")
    _add_filters(status)
    status.add_argument(
        "--offline-after", type=float, default=120.0, metavar="S", help="default 120 s"
    )

    config = parsers["config"] = verbs.add_parser("config", help="layered kiosk configuration")
    config_verbs = config.add_subparsers(dest="config_verb", required=True)
    config_set = config_verbs.add_parser("set", help="set KEY to VALUE (JSON or a bare word)")
    config_set.add_argument("key", metavar="KEY")
    config_set.add_argument("value", metavar="VALUE")
    layer = config_set.add_mutually_exclusive_group(required=True)
    layer.add_argument("--fleet", action="store_true")
    layer.add_argument("--site", metavar="SITE")
    layer.add_argument("--device", metavar="SERIAL")
    config_verbs.add_parser("list", help="every layer's keys")

    site_list = site_verbs.choices["list"]
    config_list = config_verbs.choices["list"]
    for name, parser in parsers.items():
        parser.set_defaults(func=VERBS[name])
        if name not in ("site", "config"):
            add_database_options(parser)
    for leaf in (site_add, site_list, config_set, config_list):
        add_database_options(leaf)
