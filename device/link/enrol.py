"""On-kiosk enrolment and key rotation: ``kiosk device enrol`` and ``kiosk device rotate-key``.

Enrolment: the installer types (or the camera scans) a single-use code issued for this
kiosk's serial (``kiosk provision enrol-code SERIAL``); the kiosk generates its key pair
here, proves possession by signing ``serial + code + public key``, registers the *public* key
(``POST /v1/enrol``) and writes its bundle (0600). The private key never leaves this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from core import wire
from core.bundle import Bundle, bundle_text
from core.signing import enrol_message
from device.config import DeviceConfig, load_bundle
from device.errors import ConfigError, EnrolError, KioskError, ServerError
from device.link.client import ServerClient, checked, tls_context
from device.link.identity import (
    DeviceIdentity,
    new_key,
    private_hex,
    public_hex,
    write_private_file,
)

log = logging.getLogger(__name__)

BUNDLE_NAME = "bundle.json"


def normalise_code(code: str) -> str:
    """Upper-case, separators dropped: what is signed and what the server compares."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


async def enrol(
    server_url: str,
    serial: str,
    code: str,
    out_dir: Path,
    *,
    tls_ca: str = "",
    overwrite: bool = False,
    timeout_s: float = 30.0,
) -> Path:
    """Generate a key, register its public half with ``code``, write ``out_dir/bundle.json``."""
    target = out_dir / BUNDLE_NAME
    if target.exists() and not overwrite:
        raise EnrolError("bundle_exists", f"{target} exists (use --force to replace it)")
    key = new_key()
    public = public_hex(key)
    normalised = normalise_code(code)
    signature = key.sign(enrol_message(serial, normalised, public)).hex()
    body = msgspec.to_builtins(wire.EnrolRequest(serial, normalised, public, signature))
    context = tls_context(tls_ca)
    url = server_url.rstrip("/") + "/v1/enrol"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
            http.post(url, json=body, ssl=context if context else True) as resp,
        ):
            text = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ServerError(f"{url}: {type(exc).__name__}: {exc}") from exc
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = {}
    if status != 200:
        error = data if isinstance(data, dict) else {}
        raise EnrolError(str(error.get("error", status)), str(error.get("detail", "")))
    answer = checked(data, wire.EnrolAnswer, "/v1/enrol")
    site_key = answer.site_key or answer.fleet_key
    if not site_key:
        raise ServerError("/v1/enrol: answer breaks the API: no site_key (nor fleet_key)")
    bundle = Bundle(
        device_id=answer.device_id,
        serial=answer.serial,
        site=answer.site,
        gate=answer.gate,
        server_url=server_url.rstrip("/"),
        site_key=site_key,
        server_key=answer.server_key,
        private_key=private_hex(key),
        public_key=public,
        tls_ca=tls_ca or answer.tls_ca,
    )
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private_file(target, bundle_text(bundle))
    load_bundle(target)  # what the agent will read must load
    log.info("enrolled serial %s as device %s", serial, answer.device_id)
    return target


async def rotate(bundle_path: Path, server_url: str = "") -> str:
    """Kiosk-initiated key rotation for the bundle at ``bundle_path``; the new public key."""
    bundle = load_bundle(bundle_path)
    identity = DeviceIdentity.from_bundle(bundle.device_id, bundle.private_key, bundle_path)
    async with ServerClient(
        server_url or bundle.server_url, identity, tls_ca=bundle.tls_ca
    ) as client:
        return await client.rotate_key()


def _cmd_enrol(args: argparse.Namespace) -> int:
    tls_ca = ""
    if args.tls_ca:
        try:
            tls_ca = Path(args.tls_ca).read_text(encoding="utf-8")
        except OSError as exc:
            print(f"error: --tls-ca {args.tls_ca}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    try:
        path = asyncio.run(
            enrol(
                args.server_url,
                args.serial,
                args.code,
                Path(args.out),
                tls_ca=tls_ca,
                overwrite=args.force,
            )
        )
    except EnrolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KioskError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"enrolled; bundle written to {path} (mode 0600; it holds this kiosk's private key)")
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    try:
        if args.config:
            bundle_path = Path(DeviceConfig.load(Path(args.config)).bundle)
        else:
            bundle_path = Path(args.bundle)
        public = asyncio.run(rotate(bundle_path))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"key rotated; new public key {public[:16]}… (bundle {bundle_path} updated)")
    return 0


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``enrol`` and ``rotate-key`` to ``kiosk device``."""
    enrol_p = verbs.add_parser("enrol", help="generate this kiosk's key and enrol with a code")
    server = enrol_p.add_mutually_exclusive_group(required=True)
    server.add_argument(
        "--server-url", metavar="URL", dest="server_url", help="the server's base URL"
    )
    # The spelling before --server-url was the one URL option of every verb: it still works
    # (scripts and old install notes use it) but is not shown, so help teaches one spelling.
    server.add_argument("--server", dest="server_url", help=argparse.SUPPRESS)
    enrol_p.add_argument("--serial", required=True, help="this kiosk's serial number")
    enrol_p.add_argument("--code", required=True, help="enrolment code from the administrator")
    enrol_p.add_argument("--out", required=True, metavar="DIR", help="where bundle.json goes")
    enrol_p.add_argument("--tls-ca", metavar="FILE", help="PEM of the fleet CA to pin")
    enrol_p.add_argument("--force", action="store_true", help="replace an existing bundle")
    enrol_p.set_defaults(func=_cmd_enrol)

    rot = verbs.add_parser("rotate-key", help="replace this kiosk's key (signed by the old one)")
    where = rot.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="FILE", help="device TOML configuration")
    where.add_argument("--bundle", metavar="FILE", help="bundle file")
    rot.set_defaults(func=_cmd_rotate)
