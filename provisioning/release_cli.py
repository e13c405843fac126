"""``kiosk release keygen|publish|list|rollout|status|halt|resume|cancel`` (docs/releases.md).

``keygen`` makes the fleet's Ed25519 release key (kept offline, 0600) and prints the public
hex every kiosk pins as ``[update] release_key`` (and the server as ``[releases]
release_key``). ``publish`` signs a wheel with it and uploads it; the other verbs drive
rollouts. All but ``keygen`` go through the admin API from any machine, logged in as for
``kiosk provision --server-url`` (``--admin USER``; the password from ``--password-file``,
``$SIHEYI_ADMIN_PASSWORD`` or a prompt; the token kept 0600 per server URL).

Exit status: 0 done, 1 refused (bad wheel or signature, unknown version or rollout, a state
that cannot change), 2 connection, login or file problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from provisioning.errors import InvalidField, guarded
from provisioning.release_api import ReleaseApi, read_key, signed_upload, write_key
from provisioning.remote import add_connection_options, client_from_args

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: The admin API's words for what to do → the ``kiosk release`` verb that does it.
API_TO_CLI = (("POST /v1/admin/releases", "kiosk release publish"),)


def cli_words(text: str) -> str:
    """A server refusal as an admin at the CLI reads it: with the verb to run."""
    for api, cli in API_TO_CLI:
        text = text.replace(api, cli)
    return text


def _api(args: argparse.Namespace) -> ReleaseApi:
    return client_from_args(ReleaseApi, args)


def _print(args: argparse.Namespace, answer: Any, text: Callable[[Any], str]) -> None:
    print(json.dumps(answer, ensure_ascii=False, indent=2) if args.json else text(answer))


def cmd_keygen(args: argparse.Namespace) -> int:
    """A new release key; the public hex on stdout."""
    public = write_key(Path(args.out))
    print(public)
    print(
        f"release key written to {args.out} (0600): keep it offline. Pin the line above as"
        " [update] release_key in every kiosk.toml and [releases] release_key in server.toml.",
        file=sys.stderr,
    )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Sign a wheel and upload it."""
    body = signed_upload(Path(args.wheel), read_key(Path(args.key)), args.version)
    answer = _api(args).call("POST", "/v1/admin/releases", body)
    release = answer["release"]
    _print(args, answer, lambda a: (
        f"release {release['version']} ({release['filename']}, {release['size']} bytes,"
        f" sha256 {release['sha256'][:16]}…) " + ("published" if a["created"] else
                                                  "was already published")
    ))  # fmt: skip
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """The releases the server holds."""
    answer = _api(args).call("GET", "/v1/admin/releases")
    _print(args, answer, lambda a: "\n".join(
        f"{r['version']:<16} {r['filename']:<48} {r['size']:>10} {r['published_at']}"
        f" {r['published_by']}" for r in a["releases"]
    ) or "no releases")  # fmt: skip
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    """Start a rollout of a published version."""
    scope, target = "fleet", ""
    if args.site:
        scope, target = "site", args.site
    elif args.device:
        scope, target = "device", args.device
    body = {
        "version": args.version,
        "scope": scope,
        "target": target,
        "waves": _waves(args.waves),
        "failure_threshold": args.failure_threshold,
        "soak_s": args.soak,
    }
    answer = _api(args).call("POST", "/v1/admin/rollouts", body)
    _print(args, answer, _summary)
    return 0


def _waves(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise InvalidField(
            f"--waves {text!r}: percents separated by commas, e.g. 1,10,100"
        ) from exc


def cmd_status(args: argparse.Namespace) -> int:
    """One rollout in detail, or the latest rollouts."""
    api = _api(args)
    if args.rollout_id is None:
        answer = api.call("GET", "/v1/admin/rollouts")
        _print(args, answer, lambda a: "\n".join(map(_summary, a["rollouts"])) or "no rollouts")
        return 0
    _print(args, api.call("GET", f"/v1/admin/rollouts/{args.rollout_id}"), _detail)
    return 0


def _move(verb: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        answer = _api(args).call("POST", f"/v1/admin/rollouts/{args.rollout_id}/{verb}")
        _print(args, answer, _summary)
        return 0

    run.__doc__ = f"{verb.capitalize()} a rollout."
    return run


def _summary(r: dict[str, Any]) -> str:
    where = r["scope"] + (f" {r['target']}" if r["target"] else "")
    waves = "/".join(f"{w:g}%" for w in r["waves"])
    line = (
        f"rollout {r['id']}: {r['version']} to {where}, {r['state']}, wave"
        f" {r['wave'] + 1} of {len(r['waves'])} ({waves}), threshold"
        f" {r['failure_threshold']:.0%}, started {r['started_at']} by {r['started_by']}"
    )
    return line + (f"; {r['halted_reason']}" if r.get("halted_reason") else "")


_STATES = ("offered", "downloading", "installing", "trial", "committed", "failed", "rolled_back")


def _detail(r: dict[str, Any]) -> str:
    lines = [_summary(r), f"{'WAVE':<6}{'BAND':<12}{'OPEN':<6}{'KIOSKS':>7}"
             + "".join(f"{s.upper():>12}" for s in _STATES)]  # fmt: skip
    for w in r["wave_status"]:
        band = f"{w['from_pct']:g}-{w['to_pct']:g}%"
        lines.append(
            f"{w['index'] + 1:<6}{band:<12}{'yes' if w['open'] else 'no':<6}{w['kiosks']:>7}"
            + "".join(f"{w[s]:>12}" for s in _STATES)
        )
    for site, versions in r["versions"].items():
        shown = " · ".join(f"{v} ×{n}" for v, n in versions.items())
        lines.append(f"site {site}: {shown}")
    return "\n".join(lines)


# -- the parser ---------------------------------------------------------------------------


def register(subparsers: Subparsers) -> None:
    """Add ``release`` and its verbs to the top-level ``kiosk`` parser."""
    release = subparsers.add_parser("release", help="publish and roll out software releases")
    verbs = release.add_subparsers(dest="release_verb", metavar="VERB", required=True)
    keygen = verbs.add_parser("keygen", help="make the fleet's release key (print its public hex)")
    keygen.add_argument("--out", required=True, metavar="KEYFILE", help="new file, 0600")
    keygen.set_defaults(func=guarded(cmd_keygen, cli_words))
    publish = verbs.add_parser("publish", help="sign a wheel with the release key and upload it")
    publish.add_argument("wheel", metavar="WHEEL", help="the siheyi wheel (.whl) to publish")
    publish.add_argument("--key", required=True, metavar="KEYFILE", help="the release key")
    publish.add_argument(
        "--version", help="the release version, checked: it must be the wheel's METADATA version"
    )
    publish.set_defaults(func=guarded(cmd_publish, cli_words))
    listing = verbs.add_parser("list", help="the releases the server holds")
    listing.set_defaults(func=guarded(cmd_list, cli_words))
    rollout = verbs.add_parser("rollout", help="roll a published version out in waves")
    rollout.add_argument(
        "version", metavar="VERSION", help="a published version (see `kiosk release list`)"
    )
    scope = rollout.add_mutually_exclusive_group()
    scope.add_argument("--site", help="only this site's kiosks (default: the fleet)")
    scope.add_argument("--device", metavar="SERIAL_OR_ID", help="only this kiosk")
    rollout.add_argument("--waves", default="1,10,100", help="percents of kiosks (1,10,100)")
    rollout.add_argument(
        "--failure-threshold", type=float, default=0.05, metavar="FRACTION",
        help="halt when more than this share of the reporting kiosks failed (0.05)",
    )  # fmt: skip
    rollout.add_argument(
        "--soak", type=float, default=0.0, metavar="SECONDS",
        help="keep each wave open at least this long before the next (0)",
    )  # fmt: skip
    rollout.set_defaults(func=guarded(cmd_rollout, cli_words))
    status = verbs.add_parser("status", help="the latest rollouts, or one in detail")
    status.add_argument(
        "rollout_id", metavar="ROLLOUT_ID", nargs="?", type=int, help="this rollout in detail"
    )
    status.set_defaults(func=guarded(cmd_status, cli_words))
    parsers = [publish, listing, rollout, status]
    for verb in ("halt", "resume", "cancel"):
        moving = verbs.add_parser(verb, help=f"{verb} a rollout")
        moving.add_argument(
            "rollout_id", metavar="ROLLOUT_ID", type=int, help="as `kiosk release status` lists it"
        )
        moving.set_defaults(func=guarded(_move(verb), cli_words))
        parsers.append(moving)
    for parser in parsers:
        _connection(parser)


def _connection(parser: argparse.ArgumentParser) -> None:
    add_connection_options(parser, ReleaseApi, "log in as this admin")
    parser.add_argument("--json", action="store_true", help="the server's answer as JSON")
