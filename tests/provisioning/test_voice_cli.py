"""``kiosk voice pack build|publish|list`` (docs/voice-packs.md): packs built from files, then
signed, uploaded and given to a layer against the real server on a loopback port, on SQLite
and PostgreSQL; the kiosk's download then serves exactly the bytes built."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.settings import REMOTE_KEYS
from core.voicepack import MAX_MEMBER_BYTES, MAX_PACK_BYTES, pack_sha256, read_pack, verify_pack
from provisioning import voice_cli
from provisioning.release_api import write_key
from server.config import LimitSettings, ServerConfig
from server.fleet.registry import merged_config
from server.releases.settings import ReleaseSettings
from server.storage.db import connect
from siheyi.cli import build_parser
from tests.provisioning.test_cli import run as provision
from tests.releases.support import add_kiosks, release_app, tokens
from tests.server.users_support import PASSWORD, add_user
from tests.threaded_server import served_in_thread


def run(argv: list[str]) -> int:
    """``kiosk voice pack …`` with the verbs registered as siheyi/cli.py registers them
    (under a ``voice`` command whose ``test`` verb is the kiosk's own)."""
    parser = argparse.ArgumentParser(prog="kiosk")
    voice = parser.add_subparsers(dest="command", required=True).add_parser("voice")
    voice_cli.register(voice.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def clip(folder: Path, name: str, size: int = 4000) -> Path:
    """A clip file (the CLI and server never decode audio: the kiosk does)."""
    path = folder / name
    path.write_bytes(b"RIFF" + name.encode() * (size // len(name)))
    return path


def build(folder: Path, name: str, *extra: str) -> tuple[Path, str]:
    """``kiosk voice pack build`` of one clip and one prompt: (pack file, printed sha)."""
    out = folder / f"{name}.zip"
    recording = clip(folder, f"{name}-pass.wav")
    argv = ["voice", "pack", "build", "--name", name, "-o", str(out),
            "--clip", f"pass={recording}", "--prompt", "check=请核查"]  # fmt: skip
    assert run([*argv, *extra]) == 0
    return out, pack_sha256(out.read_bytes())


# -- build ----------------------------------------------------------------------------------


def test_build_prints_the_sha256_of_the_pack_it_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recordings = tmp_path / "rec"
    recordings.mkdir()
    clip(recordings, "pass.wav")
    clip(recordings, "pass.en.FLAC")
    clip(recordings, "check.ogg")
    (recordings / "notes.txt").write_text("session of 3 May")  # not audio: left out
    out = tmp_path / "spring.zip"
    argv = ["voice", "pack", "build", "--name", "spring", "--from-dir", str(recordings),
            "--prompt", "check=请核查", "--prompt", "pass.en=Welcome", "-o", str(out)]  # fmt: skip
    assert run(argv) == 0
    printed = capsys.readouterr()
    sha = pack_sha256(out.read_bytes())
    assert printed.out == sha + "\n"
    assert "spring: 3 clip(s), 2 prompt(s)" in printed.err and str(out) in printed.err
    pack = read_pack(out.read_bytes())
    assert sorted(pack.clips) == ["check", "pass", "pass.en"]
    assert pack.clips["pass"] == (recordings / "pass.wav").read_bytes()
    assert dict(pack.manifest.prompts) == {"check": "请核查", "pass.en": "Welcome"}

    assert run(argv) == 0  # rebuilt from the same files: the same pack
    assert capsys.readouterr().out == sha + "\n"


def test_a_clip_option_wins_over_the_directory_and_json_tells_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip(tmp_path, "pass.wav")
    (tmp_path / "takes").mkdir()  # a folder in DIR is not a clip
    better = clip(tmp_path / "takes", "take2.flac")
    out = tmp_path / "p.zip"
    argv = ["voice", "pack", "build", "--name", "p", "--from-dir", str(tmp_path),
            "--clip", f"pass={better}", "-o", str(out), "--json"]  # fmt: skip
    assert run(argv) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["clips"] == {"pass": "pass.flac"} and answer["prompts"] == {}
    assert answer["sha256"] == pack_sha256(out.read_bytes())
    assert (answer["name"], answer["size"]) == ("p", out.stat().st_size)
    assert read_pack(out.read_bytes()).clips["pass"] == better.read_bytes()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--clip", "welcome={dir}/a.wav"], "the key is an outcome"),
        (["--clip", "pass={dir}/a.mp3"], "a .wav, .flac or .ogg"),
        (["--clip", "pass={dir}/big.wav"], f"at most {MAX_MEMBER_BYTES}"),
        (["--clip", "pass={dir}/a.wav", "--clip", "pass={dir}/a.wav"], "given twice"),
        (["--clip", "pass"], "expected KEY=VALUE"),
        (["--prompt", "check="], "expected KEY=VALUE"),
        (["--prompt", "passed=hi"], "not an outcome"),
        (["--prompt", "check=" + "字" * 201], "1-200"),
        (["--name", "spring 2027"], "name"),
        (["--from-dir", "{dir}/twice"], "are both pass"),
    ],
)
def test_build_refuses_what_kiosks_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    clip(tmp_path, "a.wav")
    clip(tmp_path, "a.mp3")
    (tmp_path / "big.wav").write_bytes(b"\0" * (MAX_MEMBER_BYTES + 1))
    (tmp_path / "twice").mkdir()
    clip(tmp_path / "twice", "pass.wav")
    clip(tmp_path / "twice", "pass.ogg")
    words = [w.replace("{dir}", str(tmp_path)) for w in extra]
    name = [] if "--name" in words else ["--name", "p"]
    out = tmp_path / "p.zip"
    assert run(["voice", "pack", "build", *name, *words, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert says in err and err.startswith("error: ")
    assert not out.exists()


def test_files_that_cannot_be_read_or_written_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["voice", "pack", "build", "--name", "p"]
    assert run([*base, "--clip", f"pass={tmp_path}/missing.wav", "-o", str(tmp_path / "p")]) == 2
    assert "missing.wav" in capsys.readouterr().err
    assert run([*base, "--from-dir", str(tmp_path / "nowhere"), "-o", str(tmp_path / "p")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert run([*base, "-o", str(tmp_path / "no" / "such" / "p.zip")]) == 2
    assert "p.zip" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no temporary file left


# -- publish and list against the server ------------------------------------------------


@dataclass
class Served:
    db: Path | str
    url: str
    password_file: Path
    key: Path
    public: str

    def argv(self, *words: str) -> list[str]:
        return ["voice", "pack", *words, "--server-url", self.url, "--admin", "ops",
                "--password-file", str(self.password_file)]  # fmt: skip

    def config(self, device_id: str) -> dict[str, object]:
        with connect(self.db) as conn:
            return dict(merged_config(conn, device_id)[1])


@pytest.fixture
def served(
    any_database: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Served]:
    """The real app with the release key pinned, an admin, and a kiosk at site ``north``."""
    key = tmp_path / "release.key"
    public = write_key(key)
    add_user(any_database, "ops", "admin")
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SIHEYI_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("SIHEYI_SERVER_URL", raising=False)
    config = ServerConfig(
        database=str(any_database),
        releases=ReleaseSettings(public),
        limits=LimitSettings(login_per_s=100),
    )
    with served_in_thread(lambda: release_app(config)) as url:
        yield Served(any_database, url, password_file, key, public)


def test_publish_to_a_site_then_the_kiosks_there_download_it(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (kiosk,) = add_kiosks(served.db, "north", 1)
    (elsewhere,) = add_kiosks(served.db, "south", 1)
    pack, sha = build(tmp_path, "spring")
    capsys.readouterr()
    assert run(served.argv("publish", str(pack), "--key", str(served.key), "--site", "north")) == 0
    out = capsys.readouterr().out
    assert f"voice pack spring ({pack.stat().st_size} bytes, sha256 {sha}) published" in out
    assert "voice.pack set for site north; fleet config version" in out
    assert served.config(kiosk)["voice.pack"] == sha
    assert "voice.pack" not in served.config(elsewhere)

    header = tokens(served.db, [kiosk])[kiosk]
    request = urllib.request.Request(f"{served.url}/v1/device/voice-packs/{sha}", headers=header)
    with urllib.request.urlopen(request) as answer:
        info = json.loads(answer.read())
    with urllib.request.urlopen(
        urllib.request.Request(request.full_url + "/pack", headers=header)
    ) as answer:
        assert answer.read() == pack.read_bytes()  # the very bytes built
    verify_pack(served.public, sha, info["signature"])  # signed with the key given

    assert run(served.argv("list")) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{sha}  spring ") and line.endswith(" site north")


def test_publishing_again_changes_nothing_and_json_answers(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack, sha = build(tmp_path, "spring")
    assert run(served.argv("publish", str(pack), "--key", str(served.key))) == 0
    out = capsys.readouterr().out
    assert "published" in out and "no kiosk uses it yet" in out
    assert (
        run(served.argv("publish", str(pack), "--key", str(served.key), "--fleet", "--json")) == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert (answer["created"], answer["pack"]["sha256"], answer["scope"]) == (False, sha, "fleet")
    assert isinstance(answer["config_version"], int)
    assert run(served.argv("list", "--json")) == 0
    (listed,) = json.loads(capsys.readouterr().out)["packs"]
    assert (listed["sha256"], listed["name"], listed["used_by"]) == (sha, "spring", ["fleet"])
    assert listed["published_by"] == "ops"


def test_roll_back_to_the_previous_pack_or_to_none(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/voice-packs.md: publish the old pack to the layer again (idempotent upload), or
    set ``voice.pack`` to "" with ``kiosk provision config set``."""
    (kiosk,) = add_kiosks(served.db, "north", 1)
    old, old_sha = build(tmp_path, "winter")
    new, new_sha = build(tmp_path, "spring")
    for pack in (old, new):
        assert run(served.argv("publish", str(pack), "--key", str(served.key), "--fleet")) == 0
    assert served.config(kiosk)["voice.pack"] == new_sha
    assert run(served.argv("publish", str(old), "--key", str(served.key), "--fleet")) == 0
    assert "was already published" in capsys.readouterr().out
    assert served.config(kiosk)["voice.pack"] == old_sha

    login = ["--server-url", served.url, "--admin", "ops", "--password-file",
             str(served.password_file)]  # fmt: skip
    assert (
        provision(["provision", "config", "set", "voice.pack", "", "--site", "north", *login]) == 0
    )
    assert served.config(kiosk)["voice.pack"] == ""
    capsys.readouterr()
    assert run(served.argv("list")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines[:2]] == [new_sha, old_sha]  # newest first
    assert lines[1].endswith(" fleet") and lines[2].endswith("(no pack) used by site north")


def test_refusals_exit_1(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack, _ = build(tmp_path, "spring")
    other = tmp_path / "other.key"
    write_key(other)
    assert run(served.argv("publish", str(pack), "--key", str(other))) == 1
    assert "not signed by the pinned release key" in capsys.readouterr().err
    assert (
        run(served.argv("publish", str(pack), "--key", str(served.key), "--site", "nowhere")) == 1
    )
    assert "nowhere" in capsys.readouterr().err  # uploaded, but given to no one
    assert run(served.argv("publish", str(pack), "--key", str(served.key), "--device", "SN-X")) == 1
    assert "SN-X" in capsys.readouterr().err
    bad = tmp_path / "bad.zip"
    bad.write_bytes(pack.read_bytes()[:-20])
    assert run(served.argv("publish", str(bad), "--key", str(served.key))) == 1
    assert "not a readable zip" in capsys.readouterr().err
    with bad.open("r+b") as fh:  # a wrong file given by mistake: refused unread
        fh.truncate(MAX_PACK_BYTES + 1)
    assert run(served.argv("publish", str(bad), "--key", str(served.key))) == 1
    assert f"a voice pack has at most {MAX_PACK_BYTES}" in capsys.readouterr().err


def test_connection_login_and_files_exit_2(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack, _ = build(tmp_path, "spring")
    key = ["--key", str(served.key)]
    assert run(served.argv("publish", str(tmp_path / "none.zip"), *key)) == 2
    assert run(served.argv("publish", str(pack), "--key", str(tmp_path / "none.key"))) == 2
    served.password_file.write_text("wrong\n", encoding="utf-8")
    assert run(served.argv("list")) == 2
    assert "login refused" in capsys.readouterr().err
    closed = ["voice", "pack", "list", "--server-url", "http://127.0.0.1:9", "--admin", "ops",
              "--password-file", str(served.password_file)]  # fmt: skip
    assert run(closed) == 2
    assert run(["voice", "pack", "list"]) == 1  # no --server-url: say so
    assert "--server-url URL is needed" in capsys.readouterr().err


def test_config_set_explains_every_key_kiosks_apply(capsys: pytest.CaptureFixture[str]) -> None:
    """``kiosk provision config set --help`` lists what may be set remotely, the voice's
    structured keys with an example each: a new remote key without one fails here."""
    with pytest.raises(SystemExit):
        provision(["provision", "config", "set", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert sorted(k for k in REMOTE_KEYS if f"{k} (" not in text) == []
    assert '"gain_db": -10' in text and '{"I": "en"' in text


def test_every_command_of_the_admin_doc_parses() -> None:
    """docs/voice-packs.md's ``kiosk …`` lines are commands the CLI takes, as written."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "voice-packs.md"
    blocks = re.findall(r"```sh\n(.*?)\n```", doc.read_text(encoding="utf-8"), re.DOTALL)
    lines = [ln for b in blocks for ln in b.replace("\\\n", " ").splitlines()]
    commands = [shlex.split(ln, comments=True)[1:] for ln in lines if ln.startswith("kiosk ")]
    assert len(commands) >= 10 and ["voice", "pack", "list"] in commands
    parser = build_parser()
    for words in commands:
        assert callable(parser.parse_args(words).func), words
