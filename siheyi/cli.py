"""`kiosk`: one command line for every part of Siheyi.

Each part registers its own verbs (`server`, `provision`, `audit`, `reader`, `device`,
`camera`, `voice`, `doctor`, `demo`); every verb is one function returning an exit code, reached
through the parser's dispatch table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from siheyi import __version__, audit_cli, logsetup

if TYPE_CHECKING:
    from provisioning.backend import LocalFleetBackend
    from provisioning.errors import ProvisioningError


def _reader_decode(args: argparse.Namespace) -> int:
    from firmware_bridge import decode

    return int(decode.main(sys.stdin, sys.stdout))


def _reader_simulate(args: argparse.Namespace) -> int:
    from firmware_bridge import simserve

    return simserve.main(args.cards, args.url, args.link, args.control)


def _register_reader(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reader = sub.add_parser("reader", help="ID-card reader tools (decode frames, simulate a SAM)")
    verbs = reader.add_subparsers(dest="verb", required=True)
    dec = verbs.add_parser(
        "decode",
        help="decode SAM response frames given as hex on stdin, one JSON line each",
        description="Read SAM reply frames as hex on stdin (whitespace anywhere, 0x prefixes"
        " allowed, frames may run together) and print one JSON object per frame: its status"
        " and data, or for a read reply the card's fields, with the photo and fingerprint as"
        ' byte counts only. A malformed frame prints an object with "error" and'
        ' "detail", decoding goes on, and the exit status is 1.',
    )
    dec.set_defaults(func=_reader_decode)
    sim = verbs.add_parser("simulate", help="serve a simulated SAM reader on a pty or serial URL")
    sim.add_argument("--cards", metavar="FILE.json", help="JSON file with a list of card objects")
    sim.add_argument("--url", help="serve on this pyserial URL instead of a new pty")
    sim.add_argument("--link", metavar="PATH", help="keep a stable symlink to the pty here")
    sim.add_argument(
        "--control",
        default="stdin",
        metavar="stdin|HOST:PORT",
        help="control interface: 'stdin' (default) or HOST:PORT for a TCP line protocol",
    )
    sim.set_defaults(func=_reader_simulate)


def _device_run(args: argparse.Namespace) -> int:
    from device.config import DeviceConfig
    from device.errors import ConfigError, KioskError
    from device.runtime import run_device

    try:
        config = DeviceConfig.load(Path(args.config))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_device(config))
    except KeyboardInterrupt:
        pass
    except KioskError as exc:  # bad bundle, no GPIO, journal unusable: say so, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _register_device(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("device", help="the kiosk agent")
    verbs = dev.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="run the kiosk agent")
    run.add_argument("--config", required=True, metavar="FILE", help="device TOML configuration")
    run.set_defaults(func=_device_run)
    from device import wipe
    from device.link import enrol

    enrol.register(verbs)
    wipe.register(verbs)


def _demo(args: argparse.Namespace) -> int:
    from siheyi import demo

    return demo.main(args)


def _register_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from siheyi import demo

    d = sub.add_parser("demo", help="server + simulated kiosk + scripted taps, all in one")
    demo.add_arguments(d)
    d.set_defaults(func=_demo)


def local_fleet(config: str | None, database: str | Path | None) -> LocalFleetBackend:
    """The fleet on the server's database for ``kiosk provision --config/--database``.

    ``provisioning`` may not import the server, so its local backend is wired in here, with
    the server's errors turned into provisioning's (and so into its exit statuses).
    """
    from provisioning.backend import GuardedFleet
    from provisioning.errors import StoreError
    from server.config import resolve_database
    from server.errors import ConfigError
    from server.fleet.local_backend import LocalFleet

    try:
        path = resolve_database(config, str(database) if database is not None else None)
    except ConfigError as exc:
        raise StoreError(str(exc)) from exc
    return GuardedFleet(LocalFleet(path), functools.partial(_fleet_problem, path))


def _fleet_problem(database: str, exc: Exception) -> ProvisioningError | None:
    """A server error met on the fleet database as the provisioning error it means."""
    from provisioning import errors as ours
    from server import errors as theirs
    from server.cli import DATABASE_ERRORS

    pairs: tuple[tuple[type[Exception], type[ours.ProvisioningError]], ...] = (
        (theirs.SerialExists, ours.SerialExists),
        (theirs.DeviceNotFound, ours.DeviceNotFound),
        (theirs.UnknownSite, ours.UnknownSite),
        (theirs.DeviceRevoked, ours.DeviceRevoked),
        (theirs.BundleError, ours.BundleError),
        (theirs.InvalidField, ours.InvalidField),
        (theirs.RowError, ours.InvalidField),
        (theirs.FleetError, ours.Refused),
    )
    for server_error, provisioning_error in pairs:
        if isinstance(exc, server_error):
            return provisioning_error(str(exc))
    if isinstance(exc, DATABASE_ERRORS):
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return ours.StoreError(f"{database}: {reason or type(exc).__name__}")
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only="device"`` (or ``"doctor"``) just those verbs, so the
    agent on a Pi does not import the server and OpenCV (for `kiosk camera scan`) that it
    never runs: ~48 MB of its resident memory (bench/RESULTS.md, "Kiosk resources")."""
    parser = argparse.ArgumentParser(prog="kiosk", description="Siheyi four-in-one kiosks")
    parser.add_argument("--version", action="version", version=f"siheyi {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    logsetup.add_arguments(parser)
    parser.set_defaults(share_logs=logsetup.share_with_workers)  # for `server run` workers
    sub = parser.add_subparsers(dest="command", required=True)
    from device.doctor import cli as doctor_cli

    if only == "device":
        _register_device(sub)
        return parser
    if only == "doctor":  # the boot guard runs it on every trial start
        doctor_cli.register(sub)
        return parser
    from device import voice_cli
    from device.sources import camera_cli
    from provisioning import cli as provisioning_cli
    from provisioning import release_cli
    from provisioning import voice_cli as voice_pack_cli
    from server import cli as server_cli

    server_cli.register(sub)
    provisioning_cli.register(sub, local_fleet)
    audit_cli.register(sub)
    release_cli.register(sub)
    _register_reader(sub)
    _register_device(sub)
    camera_cli.register(sub)
    voice_pack_cli.register(voice_cli.register(sub))
    doctor_cli.register(sub)
    _register_demo(sub)
    return parser


def _command(words: Sequence[str]) -> str | None:
    """The command word of a command line: its first word that is not an option (an option
    with a value before it gives the value, and so the full parser: correct, only heavier)."""
    return next((word for word in words if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = _command(words)
    parser = build_parser(command if command in ("device", "doctor") else None)
    args = parser.parse_args(words)
    try:  # every handler masks ID numbers (siheyi/logsetup.py)
        logsetup.configure_from_args(args)
    except OSError as exc:  # a log file that cannot be opened
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with quiet_service_logs(args):
        return quiet_pipe(args)


def quiet_pipe(args: argparse.Namespace) -> int:
    """Run the verb; a reader that stopped early (``kiosk … | head -1``) ends it quietly
    with status 0, as ``yes | head`` does, for every verb alike.

    Flushing here, not at interpreter exit, is what lets the broken pipe be caught; stdout is
    then pointed at /dev/null so that Python's own final flush does not complain either.
    """
    try:
        status = int(args.func(args))
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0


#: Loggers whose INFO lines are a service's log, noise on an admin's terminal: the whole
#: server ("imported 4 of 4 rows", "audit pruned …", "database … open"), not only storage.
SERVICE_LOGGERS = ("server",)


@contextlib.contextmanager
def quiet_service_logs(args: argparse.Namespace) -> Iterator[None]:
    """A one-shot verb (``kiosk server import``, ``prune``, ``kiosk provision …``) prints its
    answer, not "database … open", "applied schema migration 7", "imported 4 of 4 rows",
    "audit pruned …": those INFO lines stay for ``kiosk -v`` and for the services (``kiosk
    server run``, ``service=True``); warnings and errors always show. The levels are put
    back afterwards, so ``main()`` called in a process leaves its logging as it was."""
    if args.verbose or getattr(args, "service", False):
        yield
        return
    loggers = [logging.getLogger(name) for name in SERVICE_LOGGERS]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, before, strict=True):
            logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
