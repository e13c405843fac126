"""``kiosk provision … --help`` explains every option and shows one spelling of each (issue 14,
part 6); the whole-tree check is tests/test_help.py, this one keeps the provision verbs'."""

from __future__ import annotations

import argparse

from core.settings import REMOTE_SETTINGS
from siheyi.cli import build_parser
from tests.test_help import _name, _walk


def _provision() -> list[tuple[str, argparse.Action]]:
    return [(p, a) for p, a in _walk(build_parser(), "kiosk") if p.startswith("kiosk provision")]


def test_the_walk_reaches_the_provision_verbs() -> None:
    seen = {(path, _name(action)) for path, action in _provision()}
    assert ("kiosk provision add", "--serial") in seen
    assert ("kiosk provision config set", "key") in seen
    assert ("kiosk provision status", "--serial-prefix") in seen


def test_every_provision_option_has_a_help_line() -> None:
    assert [f"{p} {_name(a)}" for p, a in _provision() if not a.help] == []


def test_no_legacy_alias_is_shown() -> None:
    shown = [
        f"{p} {_name(a)}"
        for p, a in _provision()
        if a.help != argparse.SUPPRESS and sum(o.startswith("--") for o in a.option_strings) > 1
    ]
    assert shown == []
    args = build_parser().parse_args(
        ["provision", "add", "--serial", "S", "--site", "s", "--rotate-secret"]
    )
    assert args.rekey  # still accepted


def test_config_set_names_the_keys_kiosks_apply() -> None:
    (key,) = [a for p, a in _provision() if p == "kiosk provision config set" and a.dest == "key"]
    assert key.help is not None and all(name in key.help for name in REMOTE_SETTINGS)


def test_one_spelling_of_the_server_url() -> None:
    urls = {o for _p, a in _provision() for o in a.option_strings if "server" in o or "url" in o}
    assert urls == {"--server-url"}
