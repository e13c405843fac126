"""``kiosk server …`` verbs: run, import, init-demo-data.

``register(subparsers)`` adds the ``server`` command to the top-level ``kiosk`` parser; each
verb is one function returning an exit status, chosen through ``args.func``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import replace

from aiohttp import web

from server.app import create_app
from server.config import ServerConfig, load_config, resolve_database
from server.db import connect
from server.demodata import load_demo_data
from server.errors import ConfigError, ImportFormatError, SchemaError
from server.importer import KINDS, import_csv

log = logging.getLogger(__name__)

Verb = Callable[[argparse.Namespace], int]

#: What opening or using a database file can raise: a missing directory, a file that is
#: not SQLite, a read-only file, a schema newer than this code.
DATABASE_ERRORS = (sqlite3.Error, OSError, SchemaError)


def database_error(path: object, exc: BaseException) -> int:
    """Report a database problem as ``error: <path>: <reason>``; return exit status 2."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    print(f"error: {path}: {reason or type(exc).__name__}", file=sys.stderr)
    return 2


def config_error(exc: ConfigError) -> int:
    """Report a configuration problem; return exit status 2."""
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _config(args: argparse.Namespace) -> ServerConfig:
    config = load_config(args.config) if args.config else ServerConfig.default()
    overrides: dict[str, object] = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    if getattr(args, "database", None):
        overrides["database"] = args.database
    return replace(config, **overrides)  # type: ignore[arg-type]


def cmd_run(args: argparse.Namespace) -> int:
    """Serve the API until interrupted."""
    try:
        config = _config(args)
    except ConfigError as exc:
        return config_error(exc)
    try:  # open and migrate once up front: a bad database is a message, not a traceback
        with connect(config.database):
            pass
    except DATABASE_ERRORS as exc:
        return database_error(config.database, exc)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    url = f"http://{config.host}:{config.port}"
    print(f"Siheyi server on {url} (database {config.database})", flush=True)
    web.run_app(create_app(config), host=config.host, port=config.port, print=None)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Import one CSV file; print a per-row report; exit 1 if any row is bad."""
    try:
        database = resolve_database(args.config, args.database)
    except ConfigError as exc:
        return config_error(exc)
    try:
        report = import_csv(database, args.kind, args.file, skip_bad=args.skip_bad)
    except ImportFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DATABASE_ERRORS as exc:
        return database_error(database, exc)
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        for error in report.errors:
            print(f"{report.source}: {error}")
        verdict = "ok" if report.ok else f"{len(report.errors)} problem(s)"
        print(
            f"{report.kind}: {report.rows} row(s) read, {report.imported} imported, "
            f"{report.skipped} skipped ({verdict})"
        )
        if not report.ok and not args.skip_bad:
            print("nothing imported; fix the rows above or use --skip-bad", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_init_demo_data(args: argparse.Namespace) -> int:
    """Fill the source tables with a deterministic demo population."""
    if args.people < 1:
        print("error: --people must be at least 1", file=sys.stderr)
        return 2
    try:
        database = resolve_database(args.config, args.database)
    except ConfigError as exc:
        return config_error(exc)
    try:
        reports = load_demo_data(database, args.people, args.seed)
    except DATABASE_ERRORS as exc:
        return database_error(database, exc)
    counts = ", ".join(f"{kind} {r.imported}" for kind, r in reports.items())
    print(f"demo data for {args.people} people (seed {args.seed}) in {database}: {counts}")
    return 0 if all(r.ok for r in reports.values()) else 1


VERBS: dict[str, Verb] = {
    "run": cmd_run,
    "import": cmd_import,
    "init-demo-data": cmd_init_demo_data,
}


def add_database_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--database PATH``, resolved by :func:`resolve_database`."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file; its [server] database is used (relative to the file)",
    )
    parser.add_argument(
        "--database",
        metavar="PATH",
        help="SQLite file (overrides the config; default siheyi.db in the current directory)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``server`` and its verbs to the top-level ``kiosk`` parser."""
    server = subparsers.add_parser("server", help="run the verification server, import data")
    verbs = server.add_subparsers(dest="server_verb", metavar="VERB", required=True)

    run = verbs.add_parser("run", help="serve the HTTP API")
    run.add_argument("--config", metavar="FILE", help="TOML configuration file")
    run.add_argument("--host", help="listen address (overrides the config)")
    run.add_argument("--port", type=int, help="listen port (overrides the config)")
    run.add_argument("--database", metavar="PATH", help="SQLite file (overrides the config)")

    imp = verbs.add_parser("import", help="import a CSV file into one source table")
    imp.add_argument("kind", choices=sorted(KINDS), metavar="KIND", help=", ".join(sorted(KINDS)))
    imp.add_argument("file", metavar="FILE.csv")
    add_database_options(imp)
    imp.add_argument("--skip-bad", action="store_true", help="import the good rows only")
    imp.add_argument("--json", action="store_true", help="print the report as JSON")

    demo = verbs.add_parser("init-demo-data", help="load a generated demo population")
    add_database_options(demo)
    demo.add_argument("--people", type=int, default=500, metavar="N")
    demo.add_argument("--seed", type=int, default=2022)

    for name, parser in (("run", run), ("import", imp), ("init-demo-data", demo)):
        parser.set_defaults(func=VERBS[name])
