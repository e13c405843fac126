"""``kiosk provision …`` verbs: add, revoke, list.

The device secret only ever goes into the bundle file (mode 0600); stdout shows its path.
Exit status: 0 done, 1 refused (serial exists, unknown device, bad field, bundle problem),
2 configuration or database problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from provisioning.errors import ProvisioningError
from provisioning.registry import add_device, list_devices, revoke_device
from server.cli import DATABASE_ERRORS, add_database_options, config_error, database_error
from server.config import resolve_database
from server.errors import ConfigError

Verb = Callable[[argparse.Namespace], int]


def _database(args: argparse.Namespace) -> str:
    return resolve_database(args.config, args.database)


def cmd_add(args: argparse.Namespace) -> int:
    """Register (or, with --rotate-secret, re-key) a device and write its bundle."""
    try:
        database = _database(args)
    except ConfigError as exc:
        return config_error(exc)
    try:
        bundle = add_device(
            database,
            args.serial,
            args.site,
            args.gate,
            args.location,
            server_url=args.server_url,
            rotate_secret=args.rotate_secret,
            bundle_path=args.bundle,
        )
    except ProvisioningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DATABASE_ERRORS as exc:
        return database_error(database, exc)
    action = "re-keyed" if args.rotate_secret else "added"
    print(f"{action} device {bundle.device_id} (serial {bundle.serial}, site {bundle.site})")
    print(f"bundle written to {args.bundle} (mode 0600; it holds the device secret)")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke a device by serial or id."""
    try:
        database = _database(args)
    except ConfigError as exc:
        return config_error(exc)
    try:
        record = revoke_device(database, args.serial_or_id)
    except ProvisioningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DATABASE_ERRORS as exc:
        return database_error(database, exc)
    print(f"revoked device {record.device_id} (serial {record.serial})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List devices as a table or JSON."""
    try:
        database = _database(args)
    except ConfigError as exc:
        return config_error(exc)
    try:
        devices = list_devices(database)
    except DATABASE_ERRORS as exc:
        return database_error(database, exc)
    if args.json:
        print(json.dumps([d.to_json() for d in devices], ensure_ascii=False, indent=2))
        return 0
    print(f"{'DEVICE':<14} {'SERIAL':<20} {'SITE':<16} {'GATE':<8} {'STATUS':<8} LAST SEEN")
    for d in devices:
        seen = d.last_seen_at or "-"
        print(f"{d.device_id:<14} {d.serial:<20} {d.site:<16} {d.gate:<8} {d.status:<8} {seen}")
    return 0


VERBS: dict[str, Verb] = {"add": cmd_add, "revoke": cmd_revoke, "list": cmd_list}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``provision`` and its verbs to the top-level ``kiosk`` parser."""
    provision = subparsers.add_parser("provision", help="register, re-key, revoke kiosks")
    verbs = provision.add_subparsers(dest="provision_verb", metavar="VERB", required=True)

    add = verbs.add_parser("add", help="register a kiosk and write its bundle")
    add.add_argument("--serial", required=True)
    add.add_argument("--site", required=True)
    add.add_argument("--gate", default="")
    add.add_argument("--location", default="")
    add.add_argument("--server-url", required=True, metavar="URL")
    add.add_argument("--bundle", required=True, metavar="FILE", help="bundle file to write")
    add.add_argument("--rotate-secret", action="store_true", help="re-key an existing serial")

    revoke = verbs.add_parser("revoke", help="revoke a kiosk (effective on its next request)")
    revoke.add_argument("serial_or_id", metavar="SERIAL_OR_ID")

    lst = verbs.add_parser("list", help="list kiosks")
    lst.add_argument("--json", action="store_true")

    for name, parser in (("add", add), ("revoke", revoke), ("list", lst)):
        add_database_options(parser)
        parser.set_defaults(func=VERBS[name])
