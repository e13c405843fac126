"""``kiosk doctor --config kiosk.toml [--json]``: the report as a table or one JSON document.

Exit status: 0 when no check failed (warnings allowed), 1 when any failed, 2 when the
configuration file cannot be read at all. The boot guard runs ``kiosk doctor --json
--quiet-audio`` and reads stdout; logs go to stderr and never mix with the document.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TextIO

from device.doctor.context import DEFAULT_TIMEOUT_S, Probes, user_info
from device.doctor.model import Report, fail
from device.doctor.runner import run_doctor

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def render_table(report: Report, out: TextIO) -> None:
    """One line per check; the fix indented under every warning and failure."""
    width = max(len(c.name) for c in report.checks)
    for check in report.checks:
        out.write(f"{_MARK[check.status]}  {check.name:<{width}}  {check.detail}\n")
        if check.status != "ok" and check.fix:
            out.write(f"{'':<{width + 8}}fix: {check.fix}\n")
    counts = {s: sum(c.status == s for c in report.checks) for s in ("ok", "warn", "fail")}
    verdict = "healthy" if report.ok else "NOT healthy"
    out.write(f"kiosk {verdict}: {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail\n")


def render_json(report: Report, out: TextIO) -> None:
    """``{"ok": bool, "checks": [{name, status, detail, fix}, ...]}`` on one line."""
    out.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n")


def main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run doctor for ``args.config``; print the report; return the exit status."""
    from device.config import DeviceConfig
    from device.errors import ConfigError

    if not getattr(args, "verbose", False):
        logging.getLogger().setLevel(logging.WARNING)  # the report says it all
    render = render_json if args.json else render_table
    path = Path(args.config)
    try:
        path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        render(Report([fail("config", f"{path}: cannot read: {reason}", _CONFIG_FIX)]), out)
        return 2
    try:
        config = DeviceConfig.load(path)
    except ConfigError as exc:
        render(Report([fail("config", str(exc), _CONFIG_FIX)]), out)
        return 1
    probes = Probes()
    if args.user:
        try:
            agent_user = user_info(args.user)
        except KeyError:
            render(Report([fail("config", f"--user {args.user}: no such user", _USER_FIX)]), out)
            return 2
        probes = Probes(user=lambda: agent_user)
    quiet = bool(getattr(args, "quiet_audio", False))
    report = run_doctor(config, timeout_s=args.timeout, probes=probes, quiet_audio=quiet)
    render(report, out)
    return 0 if report.ok else 1


_USER_FIX = "name the account the agent runs as (siheyi after deploy/install.sh)"
_CONFIG_FIX = "fix the file (docs/kiosk-config.md lists every key); default /etc/siheyi/kiosk.toml"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the top-level ``doctor`` verb to ``kiosk``."""
    doctor = sub.add_parser(
        "doctor", help="check a kiosk's wiring, files, server and clock; exit 1 on any failure"
    )
    doctor.add_argument("--config", required=True, help="device TOML configuration")
    doctor.add_argument("--json", action="store_true", help="one JSON document on stdout")
    doctor.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"time limit of each check in seconds (default {DEFAULT_TIMEOUT_S:g})",
    )
    doctor.add_argument(
        "--user",
        default="",
        help="the user the agent runs as (default: the one running doctor), "
        "e.g. `sudo kiosk doctor --user siheyi`",
    )
    doctor.add_argument(
        "--quiet-audio",
        action="store_true",
        help="open the audio device with 0.2 s of silence instead of speaking the test prompt "
        "(the boot guard passes it: it runs at the gate on every trial start)",
    )
    doctor.set_defaults(func=main)
