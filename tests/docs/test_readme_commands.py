"""The README's command lines still work (issue 14, part 1).

Two levels. Every ``kiosk …`` line of the README's "Command line" block and of its ``sh``
examples must parse: its verbs exist and every option it shows is one the verb has, visible
in its help (a renamed or hidden flag fails here). And the lines that need no hardware and
no running server are run, as a user runs them, in a temporary directory: each run below
names the README line it follows, and its options must be ones that line shows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.idnumbers import make_id_number
from siheyi.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
KIOSK = [sys.executable, "-m", "siheyi.cli"]
_VERB = re.compile(r"[a-z][a-z0-9-]*(?:\|[a-z][a-z0-9-]*)*")
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class Group:
    """Verbs written as one (``query|export|verify-chain``) and the options shown with them."""

    verbs: tuple[tuple[str, ...], ...]
    options: frozenset[str]


@dataclass(frozen=True)
class Line:
    """One README command line: ``keygen --out KEY | publish WHEEL --key KEY`` is two
    groups; ``rotate-key --config F | --bundle FILE`` one, with both options."""

    text: str
    groups: tuple[Group, ...]

    @property
    def verbs(self) -> list[tuple[str, ...]]:
        return [v for g in self.groups for v in g.verbs]

    @property
    def options(self) -> frozenset[str]:
        return frozenset().union(*(g.options for g in self.groups))


def command_block() -> str:
    """The fenced block under "## Command line"."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Command line") :]
    block = re.search(r"```\n(.*?)\n```", section, re.DOTALL)
    assert block is not None
    return block[1]


def sh_examples() -> list[str]:
    """``kiosk …`` lines of the README's ``sh`` blocks."""
    blocks = re.findall(r"```sh\n(.*?)\n```", README.read_text(encoding="utf-8"), re.DOTALL)
    return [ln.strip() for b in blocks for ln in b.splitlines() if ln.startswith("kiosk ")]


def joined(block: str) -> Iterator[str]:
    """Command lines with their indented continuation lines, comments dropped."""
    current = ""
    for raw in block.splitlines():
        code = raw.split("#", 1)[0].rstrip()
        if raw.startswith("kiosk "):
            if current:
                yield current
            current = code
        elif code.strip():
            current += " " + code.strip()
    if current:
        yield current


def parse_line(text: str) -> Line:
    """``kiosk provision list|status [--site S]`` → verbs (provision list), (provision status).

    After `` | ``, a verb replaces as many trailing verbs of the first part as it has words
    (``release keygen … | publish …``, ``provision config set … | config list``); an option
    there is another option of the same verbs."""
    first, *alternatives = text.split(" | ")
    path: list[str] = []
    for word in first.split()[1:]:
        if not _VERB.fullmatch(word):
            break
        path.append(word)
    groups = [Group(tuple(_expand(path)), frozenset(_OPTION.findall(first)))]
    for alternative in alternatives:
        options = frozenset(_OPTION.findall(alternative))
        words = alternative.split()
        alt: list[str] = []
        for word in words:
            if not _VERB.fullmatch(word) or len(alt) >= len(path) - 1:
                break
            alt.append(word)
        if alt:
            groups.append(Group(tuple(_expand([*path[: len(path) - len(alt)], *alt])), options))
        else:
            last = groups.pop()
            groups.append(Group(last.verbs, last.options | options))
    return Line(text, tuple(groups))


def _expand(path: list[str]) -> list[tuple[str, ...]]:
    done: list[tuple[str, ...]] = [()]
    for word in path:
        done = [(*p, choice) for p in done for choice in word.split("|")]
    return done


def readme_lines() -> list[Line]:
    return [parse_line(t) for t in (*joined(command_block()), *sh_examples())]


def subparser(verbs: tuple[str, ...]) -> argparse.ArgumentParser:
    """The parser of ``kiosk VERB…``; the verb words that are positional values stop it."""
    parser = PARSER
    for verb in verbs:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            break
        assert verb in subs[0].choices, f"kiosk {' '.join(verbs)}: no verb {verb!r}"
        parser = subs[0].choices[verb]
    return parser


def visible_options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        opt
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for opt in action.option_strings
    }


PARSER = build_parser()
GLOBAL = visible_options(PARSER)
LINES = readme_lines()


def test_the_readme_lists_the_commands() -> None:
    verbs = {v for line in LINES for v in line.verbs}
    assert {("server", "run"), ("provision", "add"), ("reader", "decode"), ("demo",)} <= verbs


def _case(line: Line) -> object:
    return pytest.param(line, id=line.text[:60])


@pytest.mark.parametrize("line", [_case(ln) for ln in LINES])
def test_every_readme_command_line_parses(line: Line) -> None:
    """Every verb exists and shows its help; every option shown is in the help of one of the
    verbs written with it (``query|export|verify-chain --site S``: query's and export's)."""
    for group in line.groups:
        parsers = {verbs: subparser(verbs) for verbs in group.verbs}
        known = GLOBAL.union(*(visible_options(p) for p in parsers.values()))
        unknown = sorted(group.options - known)
        assert unknown == [], f"{line.text}: {unknown} not in the help of {list(parsers)}"
        for parser in parsers.values():
            with pytest.raises(SystemExit) as done:
                parser.parse_args(["--help"])
            assert done.value.code == 0


# -- the lines that need no hardware, run --------------------------------------------------


def kiosk(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*KIOSK, *args], cwd=cwd, input=stdin, capture_output=True, text=True, env=env
    )


def follows_readme(args: list[str]) -> None:
    """``args`` use a README command and only options its line shows."""
    verbs = tuple(a for a in args if not a.startswith("-"))
    lines = [ln for ln in LINES if any(verbs[: len(v)] == v for v in ln.verbs)]
    assert lines, f"no README line for kiosk {' '.join(args)}"
    used = {a for a in args if a.startswith("--")}
    shown = set().union(*(ln.options for ln in lines))
    assert used <= shown | {"--database"}, f"{sorted(used - shown)} not on the README line"


def csv_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def person_who_passes(tmp: Path) -> tuple[str, list[tuple[str, Path]]]:
    """An ID number and the four CSVs that make them pass (green, NAT 10 h old, no travel)."""
    number = make_id_number("110101", "19900307", "451")
    now = datetime.now(UTC)
    stamp = (now - timedelta(hours=1)).isoformat(timespec="seconds")
    sampled = (now - timedelta(hours=10)).isoformat(timespec="seconds")
    files = [
        ("health_code", f"id_number,colour,reason,updated_at\n{number},green,,{stamp}\n"),
        ("nat", f"id_number,sampled_at,result,lab\n{number},{sampled},negative,lab\n"),
        ("travel", f"id_number,flagged,area,updated_at\n{number},no,,{stamp}\n"),
    ]
    return number, [(kind, csv_file(tmp / f"{kind}.csv", body)) for kind, body in files]


def test_the_commands_without_hardware_run(tmp_path: Path) -> None:
    db = str(tmp_path / "siheyi.db")
    runs: list[tuple[list[str], str]] = [
        (["server", "init-demo-data", "--database", str(tmp_path / "demo.db"), "--people",
          "20", "--seed", "7"], "demo data for 20 people"),
        (["provision", "init", "--database", db], "fleet ready"),
        (["provision", "site", "add", "site-a", "--database", db], "1 site(s) added"),
    ]  # fmt: skip
    number, imports = person_who_passes(tmp_path)
    for kind, path in imports:
        runs.append((["server", "import", kind, str(path), "--database", db, "--json"], "{"))
    kiosks = csv_file(tmp_path / "kiosks.csv", "serial,site,gate\nSN-1,site-a,g1\n")
    password = csv_file(tmp_path / "pw", "a long enough password\n")
    runs += [
        (["provision", "add", "--csv", str(kiosks), "--dry-run", "--database", db], "dry run"),
        (["server", "issue-pass", number, "--site", "site-a", "--minutes", "5",
          "--database", db], "SHY1."),
        (["server", "user", "add", "ana", "--role", "guard", "--site", "east-gate", "--site",
          "west-gate", "--password-file", str(password), "--database", db], "ana"),
        (["server", "user", "list", "--database", db], "ana"),
        (["provision", "list", "--database", db], ""),
    ]  # fmt: skip
    for args, expected in runs:
        follows_readme(args)
        done = kiosk(*args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert expected in done.stdout, (args, done.stdout)


def test_kiosk_help_and_reader_decode_run(tmp_path: Path) -> None:
    assert kiosk("--help", cwd=tmp_path).returncode == 0
    follows_readme(["reader", "decode"])
    done = kiosk("reader", "decode", cwd=tmp_path, stdin="AA AA AA 96 69 00 04 00 00 80 84\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "80"
