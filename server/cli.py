"""``kiosk server …`` verbs: run, import, init-demo-data, issue-pass, prune.

``register(subparsers)`` adds the ``server`` command to the top-level ``kiosk`` parser; each
verb is one function returning an exit status, chosen through ``args.func``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from aiohttp import web

from core.idnumbers import mask, normalise
from core.passes import MAX_VALIDITY_S
from server.accounts import cli as accounts_cli
from server.app import create_app
from server.audit.retention import default_cut, prune
from server.config import ServerConfig, load_config, resolve_database
from server.errors import (
    ConfigError,
    ImportFormatError,
    PassRefused,
    SchemaError,
    StorageUnavailable,
)
from server.http.serving import serve
from server.http.workers import check_port, per_worker_limits, supervise
from server.offline.passes import issue_pass
from server.storage.connection import describe
from server.storage.db import connect
from server.verify.demodata import load_demo_data
from server.verify.importer import KINDS, import_csv

log = logging.getLogger(__name__)

Verb = Callable[[argparse.Namespace], int]

#: What opening or using a database file can raise: a missing directory, a file that is
#: not SQLite, a read-only file, a schema newer than this code.
DATABASE_ERRORS = (sqlite3.Error, psycopg.Error, OSError, SchemaError, StorageUnavailable)


def database_error(path: object, exc: BaseException) -> int:
    """Report a database problem as ``error: <path>: <reason>``; return exit status 2."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    print(f"error: {describe(path)}: {reason or type(exc).__name__}", file=sys.stderr)
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
    """Serve the API until interrupted, in one process or ``--workers N`` (the database is
    opened and migrated once, before any worker starts)."""
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
    ssl_context = None
    if bool(args.tls_cert) != bool(args.tls_key):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if args.tls_cert:
        from server.http.tls import server_context

        try:
            ssl_context = server_context(args.tls_cert, args.tls_key)
        except ConfigError as exc:
            return config_error(exc)
    workers = args.workers if args.workers is not None else config.workers
    if workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    config = replace(config, workers=workers, limits=per_worker_limits(config.limits, workers))
    share_logs = getattr(args, "share_logs", None)  # siheyi.logsetup, given by the CLI
    if callable(share_logs):  # forked workers must not each rotate one log file
        share_logs(workers)
    try:
        check_port(config.host, config.port, reuse_port=workers > 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"error: cannot listen on {config.host}:{config.port}: {reason}", file=sys.stderr)
        return 2
    scheme = "https" if ssl_context is not None else "http"
    url = f"{scheme}://{config.host}:{config.port}"
    processes = f", {workers} workers" if workers > 1 else ""
    print(f"Siheyi server on {url} (database {describe(config.database)}{processes})", flush=True)

    def worker(_index: int) -> None:
        # The database thread (audit ingest is Python-heavy) and the event loop share the
        # GIL; handing it over every 0.5 ms instead of 5 ms took verify p99 at 1,200 kiosks
        # on SQLite from 152 to 80 ms and from 58 to 42 ms in two alternated pairs.
        sys.setswitchinterval(0.0005)
        app = create_app(config)
        with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):  # a signal: stop cleanly
            asyncio.run(serve(app, config.host, config.port, ssl_context, reuse_port=workers > 1))

    if workers == 1:
        worker(0)
        return 0
    return supervise(worker, workers)


def cmd_import(args: argparse.Namespace) -> int:
    """Import one CSV file; print a per-row report; exit 1 if any row is bad."""
    try:
        database = resolve_database(args.config, args.database)
    except ConfigError as exc:
        return config_error(exc)
    try:
        report = import_csv(
            database, args.kind, args.file, skip_bad=args.skip_bad, create_sites=args.create_sites
        )
    except ImportFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DATABASE_ERRORS as exc:
        return database_error(database, exc)
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        for line in report.grouped():  # rows with the same problem on one line
            print(f"{report.source}: {line}")
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


def cmd_issue_pass(args: argparse.Namespace) -> int:
    """Print a signed offline pass for a person whose current decision is pass."""
    segno: Any = None
    if args.png:
        try:
            segno = importlib.import_module("segno")
        except ImportError:
            print("error: --png needs segno (pip install segno)", file=sys.stderr)
            return 1
    try:
        config = load_config(args.config) if args.config else ServerConfig.default()
        config = replace(config, database=resolve_database(args.config, args.database))
    except ConfigError as exc:
        return config_error(exc)
    masked = mask(normalise(args.id_number))
    try:
        issued = asyncio.run(
            issue_pass(config, args.id_number, minutes=args.minutes, site=args.site)
        )
    except PassRefused as exc:
        print(f"not issued for {masked}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DATABASE_ERRORS as exc:
        return database_error(config.database, exc)
    print(issued.text, flush=True)
    expires = datetime.fromtimestamp(issued.payload["exp"], UTC).isoformat()
    print(f"pass for {masked} at site {args.site}, valid until {expires}", file=sys.stderr)
    if segno is not None:
        try:
            segno.make_qr(issued.text, error="m").save(args.png, scale=4, border=4)
        except OSError as exc:
            print(f"error: {args.png}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    return 0


def _cut(text: str) -> datetime:
    """``--before``: an ISO 8601 date (midnight) or time; without an offset it is UTC."""
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=UTC)


def _prune_cut(args: argparse.Namespace, config: ServerConfig) -> datetime | None:
    """The cut ``--before`` names, else ``[audit] retention_days`` ago; None: refused (said)."""
    if args.before:
        try:
            return _cut(args.before)
        except ValueError:
            print(f"error: --before: not an ISO 8601 date or time: {args.before}", file=sys.stderr)
            return None
    cut = default_cut(datetime.now(UTC), config.audit_retention_days)
    if cut is None:
        print(
            "error: nothing to prune: give --before DATE or set [audit] retention_days",
            file=sys.stderr,
        )
    return cut


def cmd_prune(args: argparse.Namespace) -> int:
    """Remove the audit rows received before the cut; print what went."""
    try:
        config = load_config(args.config) if args.config else ServerConfig.default()
        database = resolve_database(args.config, args.database)
    except ConfigError as exc:
        return config_error(exc)
    before = _prune_cut(args, config)
    if before is None:
        return 2
    try:
        with connect(database) as conn:
            report = prune(conn, before)
    except DATABASE_ERRORS as exc:
        return database_error(database, exc)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    dropped = report.partitions_dropped
    print(
        f"audit rows received before {report.before} removed: {report.events} event(s),"
        f" {report.conflicts} conflict(s), {report.losses} loss report(s)"
        + (f"; partitions dropped: {', '.join(dropped)}" if dropped else "")
    )
    return 0


VERBS: dict[str, Verb] = {
    "run": cmd_run,
    "import": cmd_import,
    "init-demo-data": cmd_init_demo_data,
    "issue-pass": cmd_issue_pass,
    "prune": cmd_prune,
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
        metavar="PATH|URL",
        help="SQLite file or postgresql:// URL (overrides the config; default siheyi.db in"
        " the current directory)",
    )


def _database_or_none(args: argparse.Namespace) -> str | Path | None:
    """The database a verb names, or None once a configuration error is printed."""
    try:
        return resolve_database(args.config, args.database)
    except ConfigError as exc:
        config_error(exc)
        return None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``server`` and its verbs to the top-level ``kiosk`` parser."""
    server = subparsers.add_parser("server", help="run the verification server, import data")
    verbs = server.add_subparsers(dest="server_verb", metavar="VERB", required=True)

    run = verbs.add_parser("run", help="serve the HTTP API")
    run.add_argument("--config", metavar="FILE", help="TOML configuration file")
    run.add_argument("--host", help="listen address (overrides the config)")
    run.add_argument("--port", type=int, help="listen port (overrides the config)")
    run.add_argument(
        "--database",
        metavar="PATH|URL",
        help="SQLite file or postgresql:// URL (overrides the config)",
    )
    run.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS: certificate chain (PEM)")
    run.add_argument("--tls-key", metavar="FILE", help="serve HTTPS: private key (PEM)")
    run.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the port with SO_REUSEPORT (default: [server] workers)",
    )

    imp = verbs.add_parser("import", help="import a CSV file into one source table")
    imp.add_argument("kind", choices=sorted(KINDS), metavar="KIND", help=", ".join(sorted(KINDS)))
    imp.add_argument("file", metavar="FILE.csv", help="the CSV file (header row; UTF-8)")
    add_database_options(imp)
    imp.add_argument("--skip-bad", action="store_true", help="import the good rows only")
    imp.add_argument(
        "--create-sites",
        action="store_true",
        help="site_people: register sites that are not registered yet (else their rows are"
        " refused, as kiosk provision add --csv does)",
    )
    imp.add_argument("--json", action="store_true", help="print the report as JSON")

    demo = verbs.add_parser("init-demo-data", help="load a generated demo population")
    add_database_options(demo)
    demo.add_argument(
        "--people", type=int, default=500, metavar="N", help="people to generate (default 500)"
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=2022,
        metavar="N",
        help="random seed: the same seed gives the same people (default 2022)",
    )

    issue = verbs.add_parser(
        "issue-pass", help="print a signed offline pass (QR text) for a person who passes now"
    )
    issue.add_argument(
        "id_number", metavar="ID_NUMBER", help="the person's 18-character resident ID number"
    )
    issue.add_argument(
        "--minutes",
        type=int,
        default=5,
        metavar="N",
        help=f"validity in minutes, 1..{MAX_VALIDITY_S // 60} (default 5)",
    )
    issue.add_argument(
        "--site",
        required=True,
        metavar="S",
        help="the site whose kiosks accept it (required: pseudonyms are per site)",
    )
    issue.add_argument("--png", metavar="FILE", help="also write the pass as a QR image (segno)")
    add_database_options(issue)

    prune_verb = verbs.add_parser(
        "prune", help="remove audit events received before a date (retention)"
    )
    prune_verb.add_argument(
        "--before",
        metavar="DATE",
        help="ISO 8601 date or time, UTC unless it has an offset"
        " (default: now minus [audit] retention_days)",
    )
    add_database_options(prune_verb)
    prune_verb.add_argument("--json", action="store_true", help="print the report as JSON")

    accounts_cli.register(verbs, add_database_options, _database_or_none)
    for name, parser in (
        ("run", run),
        ("prune", prune_verb),
        ("import", imp),
        ("init-demo-data", demo),
        ("issue-pass", issue),
    ):
        parser.set_defaults(func=VERBS[name])
    run.set_defaults(service=True)  # its database and migration lines are a service's log
