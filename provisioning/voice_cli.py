"""``kiosk voice pack build|publish|list``: new words for the kiosks, without visiting them
(docs/voice-packs.md).

``build`` zips recorded clips and prompt texts into a pack and prints its SHA-256 (the same
files always give the same pack). ``publish`` signs it with the fleet's release key (``kiosk
release keygen``), uploads it and, with ``--fleet``, ``--site`` or ``--device``, gives it to
that layer's kiosks by setting ``voice.pack``; they fetch it at their next heartbeat.
``list`` shows the packs the server holds and where each is in use. ``publish`` and
``list`` log in as ``kiosk release`` does.

Exit status: 0 done, 1 refused (a bad clip, key, pack or signature, an unknown site or
kiosk), 2 connection, login or file problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TypeAlias

import msgspec

from core.voicepack import read_pack
from core.wire_admin import Scope
from provisioning.errors import guarded
from provisioning.release_api import read_key
from provisioning.remote import add_connection_options, client_from_args
from provisioning.voice_api import (
    PACK_KEY,
    VoicePackApi,
    build,
    clips_in,
    pairs,
    read_pack_file,
    signed_upload,
    write_atomically,
)

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: The admin API's words for what to do → the verb that does it.
API_TO_CLI = (("POST /v1/admin/voice-packs", "kiosk voice pack publish"),)


def cli_words(text: str) -> str:
    """A server refusal as an admin at the CLI reads it: with the verb to run."""
    for api, cli in API_TO_CLI:
        text = text.replace(api, cli)
    return text


def _dump(answer: Any) -> None:
    print(json.dumps(answer, ensure_ascii=False, indent=2))


def cmd_build(args: argparse.Namespace) -> int:
    """Build a pack; its SHA-256 on stdout."""
    clips = clips_in(Path(args.from_dir)) if args.from_dir else {}
    clips.update({k: Path(v) for k, v in pairs(args.clip, "--clip").items()})  # --clip wins
    data = build(args.name, clips, pairs(args.prompt, "--prompt"))
    output = Path(args.output)
    write_atomically(output, data)
    pack = read_pack(data)
    if args.json:
        manifest = pack.manifest
        _dump({"sha256": pack.sha256, "name": manifest.name, "size": len(data),
               "output": str(output), "clips": dict(manifest.clips),
               "prompts": dict(manifest.prompts)})  # fmt: skip
        return 0
    print(pack.sha256)
    print(
        f"voice pack {pack.manifest.name}: {len(pack.clips)} clip(s), "
        f"{len(pack.manifest.prompts)} prompt(s), {len(data)} bytes, written to {output}",
        file=sys.stderr,
    )
    return 0


def _scope(args: argparse.Namespace) -> tuple[Scope, str] | None:
    if args.site:
        return "site", args.site
    if args.device:
        return "device", args.device
    return ("fleet", "") if args.fleet else None


def cmd_publish(args: argparse.Namespace) -> int:
    """Sign and upload a pack; with a layer, give it to that layer's kiosks."""
    data, pack = read_pack_file(Path(args.pack))
    upload = signed_upload(data, pack.sha256, read_key(Path(args.key)))
    api = client_from_args(VoicePackApi, args)
    published = api.publish(upload)
    scope = _scope(args)
    version = api.use(pack.sha256, *scope) if scope else None
    if args.json:
        answer = msgspec.to_builtins(published)
        if scope:
            answer.update(scope=scope[0], target=scope[1], config_version=version)
        _dump(answer)
        return 0
    info = published.pack
    state = "published" if published.created else "was already published"
    print(f"voice pack {info.name} ({info.size} bytes, sha256 {info.sha256}) {state}")
    if scope:
        where = "fleet" if scope[0] == "fleet" else " ".join(scope)
        print(f"{PACK_KEY} set for {where}; fleet config version {version}"
              " (kiosks fetch it at their next heartbeat)")  # fmt: skip
    else:
        print("no kiosk uses it yet: publish again with --fleet, --site S or --device SERIAL")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """The packs the server holds, newest first, and where each is in use."""
    api = client_from_args(VoicePackApi, args)
    packs, users = api.packs().packs, api.users()
    if args.json:
        _dump({"packs": [{**msgspec.to_builtins(p), "used_by": users.get(p.sha256, [])}
                         for p in packs]})  # fmt: skip
        return 0
    lines = [
        f"{p.sha256}  {p.name:<24} {p.size:>9} {p.published_at} {p.published_by:<12}"
        f" {', '.join(users.get(p.sha256, [])) or '-'}"
        for p in packs
    ]
    blank = [f"{'':<64}  (no pack) used by {', '.join(users[''])}"] if "" in users else []
    print("\n".join(lines + blank) or "no voice packs")
    return 0


# -- the parser ---------------------------------------------------------------------------


def register(voice_verbs: Subparsers) -> None:
    """Add ``pack`` and its verbs under ``kiosk voice`` (whose ``test`` is the kiosk's own,
    device/voice_cli.py)."""
    pack = voice_verbs.add_parser("pack", help="build, publish and list voice packs (new words)")
    verbs = pack.add_subparsers(dest="pack_verb", metavar="VERB", required=True)
    _build_parser(verbs.add_parser("build", help="zip clips and prompts into a pack"))
    publish = verbs.add_parser(
        "publish", help="sign a pack with the release key, upload it, give it to kiosks"
    )
    publish.add_argument("pack", metavar="PACK", help="the pack (.zip) `build` wrote")
    publish.add_argument("--key", required=True, metavar="KEYFILE", help="the release key")
    layer = publish.add_mutually_exclusive_group()
    layer.add_argument("--fleet", action="store_true", help="then give it to every kiosk")
    layer.add_argument("--site", metavar="SITE", help="then give it to the kiosks of SITE")
    layer.add_argument("--device", metavar="SERIAL", help="then give it to one kiosk")
    publish.set_defaults(func=guarded(cmd_publish, cli_words))
    listing = verbs.add_parser("list", help="the packs the server holds and where they are used")
    listing.set_defaults(func=guarded(cmd_list, cli_words))
    for parser in (publish, listing):
        add_connection_options(parser, VoicePackApi, "log in as this admin")
        parser.add_argument("--json", action="store_true", help="the answer as JSON")


def _build_parser(build_: argparse.ArgumentParser) -> None:
    build_.add_argument("--name", required=True, help="the pack's name (letters, digits, _.-)")
    build_.add_argument(
        "--clip", action="append", default=[], metavar="KEY=FILE",
        help="a recording (WAV, FLAC, OGG; at most 2.5 s) for an outcome (pass) or outcome"
        " and language (pass.en); repeatable",
    )  # fmt: skip
    build_.add_argument(
        "--prompt", action="append", default=[], metavar="KEY=TEXT",
        help="the words for an outcome (check=请核查) or outcome and language; repeatable",
    )  # fmt: skip
    build_.add_argument(
        "--from-dir", metavar="DIR",
        help="every <key>.wav|flac|ogg in DIR as a clip (a --clip for the same key wins)",
    )  # fmt: skip
    build_.add_argument("-o", "--output", required=True, metavar="FILE", help="the pack to write")
    build_.add_argument("--json", action="store_true", help="the pack's facts as JSON")
    build_.set_defaults(func=guarded(cmd_build))
