"""`kiosk … --help` explains every option, and teaches one spelling of each (issue 14, part 6).

The whole argparse tree is walked, so a new verb or option without a help line fails here
rather than in front of an admin. A legacy spelling keeps working but is hidden: it is a
separate option with ``help=argparse.SUPPRESS`` and the same ``dest``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Iterator

import pytest

from siheyi.cli import build_parser

Found = tuple[str, argparse.Action]


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[Found]:
    """Every argument of every (sub)command, with the command line that reaches it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, action


def _verbs(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, list[str], set[str]]]:
    """Every subcommand list: (path, names argparse accepts, names its help shows with a
    help line)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            shown = {choice.dest for choice in action._choices_actions if choice.help}
            yield path, list(action.choices), shown
            for name, sub in action.choices.items():
                yield from _verbs(sub, f"{path} {name}")


def _name(action: argparse.Action) -> str:
    return "/".join(action.option_strings) or action.dest


def _everything() -> list[Found]:
    """The full parser and the lean ones the agent and the doctor build for themselves."""
    parsers = [build_parser(only) for only in (None, "device", "doctor")]
    return [found for parser in parsers for found in _walk(parser, "kiosk")]


def test_the_walk_sees_the_whole_tree() -> None:
    """A walk that missed the nested verbs would pass for the wrong reason."""
    seen = {(path, _name(action)) for path, action in _everything()}
    assert ("kiosk device enrol", "--serial") in seen
    assert ("kiosk server import", "file") in seen
    assert ("kiosk audit export", "--site") in seen


def test_every_option_and_positional_has_a_help_line() -> None:
    missing = [f"{path} {_name(action)}" for path, action in _everything() if not action.help]
    assert missing == []


def test_no_option_shows_two_long_spellings() -> None:
    """``-o/--output`` is a short form; ``--rekey/--rotate-secret`` is a legacy alias."""
    shown = [
        f"{path} {_name(action)}"
        for path, action in _everything()
        if action.help != argparse.SUPPRESS
        and sum(o.startswith("--") for o in action.option_strings) > 1
    ]
    assert shown == []


def test_every_verb_has_a_help_line_and_no_alias() -> None:
    """A verb missing here has no line in its parent's help, or is an alias of another."""
    unexplained = [
        f"{path}: {sorted(set(names) - shown)}"
        for path, names, shown in _verbs(build_parser(), "kiosk")
        if set(names) - shown
    ]
    assert unexplained == []


def _help_text(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser("device" if argv[0] == "device" else None).parse_args([*argv, "--help"])
    return out.getvalue()


def test_enrol_is_told_the_server_url_like_every_other_verb() -> None:
    text = _help_text(["device", "enrol"])
    assert "--server-url URL" in text
    assert "--server " not in text and "--server," not in text
    enrol = ["device", "enrol", "--serial", "S", "--code", "C", "--out", "d"]
    args = build_parser("device").parse_args([*enrol, "--server-url", "https://a"])
    assert args.server_url == "https://a"


def test_enrol_still_takes_the_old_server_spelling() -> None:
    args = build_parser("device").parse_args(
        ["device", "enrol", "--server", "https://b", "--serial", "S", "--code", "C", "--out", "d"]
    )
    assert args.server_url == "https://b"


def test_enrol_without_a_server_url_names_the_shown_spelling(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser("device").parse_args(
            ["device", "enrol", "--serial", "S", "--code", "C", "--out", "d"]
        )
    assert exit_.value.code == 2
    assert "--server-url" in capsys.readouterr().err


#: Options with another spelling that are not the server's URL, or are its hidden alias.
OTHER_URL_OPTIONS = {
    ("kiosk device enrol", "--server"),  # hidden legacy alias of --server-url
    ("kiosk reader simulate", "--url"),  # a pyserial URL to serve on, not the server's
}


def _names_a_url(action: argparse.Action) -> bool:
    """An option that (by its dest, metavar or spelling) takes a URL of a server."""
    words = {w for o in action.option_strings for w in o.lstrip("-").split("-")}
    return action.dest == "server_url" or action.metavar == "URL" or bool(words & {"url", "server"})


def test_every_option_taking_the_server_url_is_spelled_server_url() -> None:
    """One spelling across the whole tree (issue 14, part 6): a new verb's ``--url`` or
    ``--server`` for the server's address fails here."""
    found = [(path, action) for path, action in _everything() if _names_a_url(action)]
    other = {
        (path, option)
        for path, action in found
        for option in action.option_strings
        if option != "--server-url"
    }
    assert other == OTHER_URL_OPTIONS
    assert len({path for path, action in found if "--server-url" in action.option_strings}) > 20


def _bare_verbs(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str]]:
    """(path, description) of every verb that takes no argument at all."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        for name, sub in action.choices.items():
            yield from _bare_verbs(sub, f"{path} {name}")
    if not subs and all(isinstance(a, argparse._HelpAction) for a in parser._actions):
        yield path, parser.description or ""


def test_a_verb_without_options_explains_itself_in_its_help() -> None:
    """``kiosk reader decode --help`` has no options to list: its description says what
    goes in and what comes out."""
    bare = dict(_bare_verbs(build_parser(), "kiosk"))
    assert "kiosk reader decode" in bare
    assert [path for path, description in bare.items() if len(description) < 40] == []
    text = _help_text(["reader", "decode"])
    assert "stdin" in text and "one JSON object per frame" in text
