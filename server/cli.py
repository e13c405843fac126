"""``kiosk server …`` verbs: run, import, init-demo-data.

``register(subparsers)`` adds the ``server`` command to the top-level ``kiosk`` parser; each
verb is one function returning an exit status, chosen through ``args.func``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import replace

from aiohttp import web

from server.app import create_app
from server.config import ServerConfig, load_config
from server.demodata import load_demo_data
from server.errors import ConfigError, ImportFormatError, SchemaError
from server.importer import KINDS, import_csv

log = logging.getLogger(__name__)

Verb = Callable[[argparse.Namespace], int]


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
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
        report = import_csv(args.database, args.kind, args.file, skip_bad=args.skip_bad)
    except (ImportFormatError, SchemaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
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
    reports = load_demo_data(args.database, args.people, args.seed)
    counts = ", ".join(f"{kind} {r.imported}" for kind, r in reports.items())
    print(f"demo data for {args.people} people (seed {args.seed}) in {args.database}: {counts}")
    return 0 if all(r.ok for r in reports.values()) else 1


VERBS: dict[str, Verb] = {
    "run": cmd_run,
    "import": cmd_import,
    "init-demo-data": cmd_init_demo_data,
}


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
    imp.add_argument("--database", metavar="PATH", default="siheyi.db")
    imp.add_argument("--skip-bad", action="store_true", help="import the good rows only")
    imp.add_argument("--json", action="store_true", help="print the report as JSON")

    demo = verbs.add_parser("init-demo-data", help="load a generated demo population")
    demo.add_argument("--database", metavar="PATH", default="siheyi.db")
    demo.add_argument("--people", type=int, default=500, metavar="N")
    demo.add_argument("--seed", type=int, default=2022)

    for name, parser in (("run", run), ("import", imp), ("init-demo-data", demo)):
        parser.set_defaults(func=VERBS[name])
