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
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


def readme_block(after: str, lang: str = "") -> str:
    """The first fenced block (of `lang`) in the README after the text `after`."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(after) :]
    block = re.search(rf"```{lang}\n(.*?)\n```", section, re.DOTALL)
    assert block is not None
    return block[1]


def command_block() -> str:
    """The fenced block under "## Command line"."""
    return readme_block("## Command line")


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
    """``args`` use a README command and only options its line shows. No ``--database``
    unless the line shows it: the runs work on ``siheyi.db`` in their directory, the default
    the README's "every other provision verb takes [--database PATH | --config FILE]" means."""
    verbs = tuple(a for a in args if not a.startswith("-"))
    lines = [ln for ln in LINES if any(verbs[: len(v)] == v for v in ln.verbs)]
    assert lines, f"no README line for kiosk {' '.join(args)}"
    used = {a for a in args if a.startswith("--")}
    shown = set().union(*(ln.options for ln in lines))
    assert used <= shown, f"{sorted(used - shown)} not on the README line"


def run_all(runs: list[tuple[list[str], str]], cwd: Path) -> None:
    """Each run follows the README, exits 0 and prints what it promises."""
    for args, expected in runs:
        follows_readme(args)
        done = kiosk(*args, cwd=cwd)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert expected in done.stdout, (args, done.stdout)


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


# two chains of ~20 CLI processes each: 30 s alone, more in a loaded suite
@pytest.mark.timeout(300)
def test_the_commands_without_hardware_run(tmp_path: Path) -> None:
    """Server and provisioning verbs on ``siheyi.db`` in two temporary directories: two
    chains of runs that depend on nothing of each other, run side by side (2 cores)."""
    fleet, server = tmp_path / "fleet", tmp_path / "server"
    fleet.mkdir()
    server.mkdir()
    kiosks = csv_file(fleet / "kiosks.csv", "serial,site,gate\nSN-1,site-a,g1\n")
    fleet_runs: list[tuple[list[str], str]] = [
        (["provision", "init"], "fleet ready"),
        (["provision", "site", "add", "site-a"], "1 site(s) added"),
        (["provision", "site", "list"], "site-a"),
        (["provision", "add", "--csv", str(kiosks), "--dry-run"], "dry run"),
        (["provision", "add", "--serial", "SN-2", "--site", "site-a"], "SN-2"),
        (["provision", "enrol-code", "SN-2"], "SN-2"),
        (["provision", "config", "set", "verify.deadline_s", "1.0", "--fleet"], "config"),
        (["provision", "config", "list"], "verify.deadline_s"),
        (["provision", "list"], "SN-2"),
        (["provision", "status"], "SKEW"),
        (["provision", "revoke", "SN-2"], "revoked"),
    ]
    number, imports = person_who_passes(server)
    password = csv_file(server / "pw", "a long enough password\n")
    server_runs: list[tuple[list[str], str]] = [
        (["server", "init-demo-data", "--database", "demo.db", "--people", "20", "--seed", "7"],
         "demo data for 20 people"),
        (["provision", "site", "add", "site-a"], "1 site(s) added"),
        *((["server", "import", kind, str(path), "--json"], "{") for kind, path in imports),
        (["server", "issue-pass", number, "--site", "site-a", "--minutes", "5"], "SHY1."),
        (["server", "user", "add", "ana", "--role", "guard", "--site", "east-gate", "--site",
          "west-gate", "--password-file", str(password)], "ana"),
        (["server", "user", "list"], "ana"),
        (["server", "user", "remove", "ana"], "ana"),
        (["server", "prune", "--before", "2000-01-01", "--database", "siheyi.db"], ""),
        (["release", "keygen", "--out", "release.key"], ""),
    ]  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        chains = [
            pool.submit(run_all, fleet_runs, fleet),
            pool.submit(run_all, server_runs, server),
        ]
        for chain in chains:
            chain.result()
    assert (server / "release.key").stat().st_mode & 0o077 == 0
    assert "ana" not in kiosk("server", "user", "list", cwd=server).stdout


def readme_demo() -> tuple[str, str]:
    """The heading line and the summary line of the README's demo output."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index("   tap  id (masked)") :]
    heading = block.splitlines()[0]
    summary = next(ln for ln in block.splitlines() if ln.startswith("summary: "))
    return heading, summary


def test_the_demo_prints_the_headings_and_summary_the_readme_shows(tmp_path: Path) -> None:
    args = ["demo", "--taps", "3"]
    follows_readme(args)
    done = kiosk(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    heading, summary = readme_demo()
    lines = done.stdout.splitlines()
    assert heading.split() in [ln.split() for ln in lines], done.stdout
    taps = [ln for ln in lines if re.match(r"\[ +\d+\]  ", ln)]
    assert len(taps) == 3, done.stdout
    summary_shape = r"summary: {} taps \({}\): .+; latency p50 [\d.]+ ms, p99 [\d.]+ ms"
    assert re.fullmatch(summary_shape.format(7, "Ctrl-C"), summary), summary  # the README's
    assert re.fullmatch(summary_shape.format(3, "--taps"), lines[-1]), lines[-1]


def test_kiosk_help_and_reader_decode_run(tmp_path: Path) -> None:
    assert kiosk("--help", cwd=tmp_path).returncode == 0
    follows_readme(["reader", "decode"])
    done = kiosk("reader", "decode", cwd=tmp_path, stdin="AA AA AA 96 69 00 04 00 00 80 84\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "80"


def readme_cards() -> str:
    """The JSON example under "The cards file" in the README."""
    return readme_block("**The cards file.**", "json")


def test_the_reader_simulator_serves_the_readme_cards(tmp_path: Path) -> None:
    """``tap #1`` and ``tap …0151`` pick the cards the README says; a bare ``tap 1`` is
    refused as ambiguous. Driven through the TCP control port, as a test rig would."""
    cards = csv_file(tmp_path / "cards.json", readme_cards())
    args = ["reader", "simulate", "--cards", str(cards), "--control", "127.0.0.1:0"]
    follows_readme(args)
    proc = subprocess.Popen(
        [*KIOSK, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        control = ""
        for _ in range(2):
            control = proc.stdout.readline()
        assert control.startswith("control on "), (control, proc.stderr)
        port = int(control.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            answers = conn.makefile("rw", encoding="utf-8", newline="\n")

            def ask(line: str) -> str:
                answers.write(line + "\n")
                answers.flush()
                return answers.readline().strip()

            assert ask("tap #1 0") == "tapped 李四"
            assert ask("tap …0151 0") == "tapped 史密斯"
            refused = ask("tap 1 0")
            assert "ambiguous" in refused and "#1" in refused, refused
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
