"""docs/server.md describes the identity the code has: per-kiosk Ed25519 keys and session
tokens, not the shared secrets of before issue 6 (issue 14, part 1)."""

from __future__ import annotations

import argparse
import inspect
import json
import re
from pathlib import Path

import msgspec

from core.bundle import Bundle, decode_bundle
from server import cli as server_cli
from server.verify.importer import import_csv

SERVER_MD = Path(__file__).resolve().parents[2] / "docs" / "server.md"


def bundle_example() -> dict[str, str]:
    """The JSON block of the "Device bundle" section, placeholders filled with valid hex."""
    text = SERVER_MD.read_text(encoding="utf-8")
    section = text[text.index("### Device bundle") :]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block is not None
    example: dict[str, str] = json.loads(block[1])
    return {k: "ab" * 32 if v.startswith("<64 hex") else v for k, v in example.items()}


def test_the_bundle_example_loads_as_a_bundle() -> None:
    example = bundle_example()
    example["fleet_key"] = example["site_key"]
    example["tls_ca"] = ""
    bundle = decode_bundle(json.dumps(example))
    assert bundle.device_id == example["device_id"]


def test_the_bundle_example_shows_every_field_and_no_other() -> None:
    fields = {f.encode_name for f in msgspec.inspect.type_info(Bundle).fields}  # type: ignore[attr-defined]
    assert set(bundle_example()) == fields | {"fleet_key"}


def test_no_shared_secret_is_described() -> None:
    text = SERVER_MD.read_text(encoding="utf-8")
    assert "--rotate-secret" not in text
    assert "Bearer <device_id>." not in text
    assert '"secret":' not in text


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_import_section_says_what_the_code_does() -> None:
    """The synopsis has every option of ``kiosk server import``, the signature every keyword
    of ``import_csv``, and the site_people rule the refusal of unknown sites."""
    text = _flat(SERVER_MD.read_text(encoding="utf-8"))
    synopsis = text[text.index("kiosk server import KIND") :]
    synopsis = synopsis[: synopsis.index("KIND:")]
    parser = argparse.ArgumentParser(prog="kiosk")
    server_cli.register(parser.add_subparsers(dest="command"))
    for option in _options(parser, "server", "import"):
        assert option in synopsis, option
    signature = text[text.index("In code: `import_csv(") :]
    signature = signature[: signature.index("`", len("In code: `"))]
    for name in list(inspect.signature(import_csv).parameters)[1:]:
        assert name in signature, name
    rule = text[text.index("| `site_people` |") :]
    rule = rule[: rule.index("| `qr_token` |")]
    assert "must be registered" in rule and "--create-sites" in rule


def _options(parser: argparse.ArgumentParser, *verbs: str) -> list[str]:
    """The long options of ``kiosk VERB…`` (help and hidden ones left out)."""
    for verb in verbs:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[verb]
    return [
        o
        for a in parser._actions
        if a.help != argparse.SUPPRESS
        for o in a.option_strings
        if o.startswith("--") and o != "--help"
    ]
