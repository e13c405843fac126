"""``kiosk release keygen|publish|list|rollout|status|halt|resume|cancel`` against the real
server on a loopback port, on SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.releases import file_sha256, verify_release
from provisioning import release_cli
from server.config import LimitSettings, ServerConfig
from server.releases.settings import ReleaseSettings
from server.storage.db import connect
from tests.releases.support import make_wheel, release_app
from tests.server.users_support import PASSWORD, add_user
from tests.threaded_server import served_in_thread


@dataclass
class Served:
    db: Path | str
    url: str
    password_file: Path

    def argv(self, *words: str) -> list[str]:
        return ["release", *words, "--server-url", self.url, "--admin", "ops",
                "--password-file", str(self.password_file)]  # fmt: skip


def run(argv: list[str]) -> int:
    """``kiosk …`` with only the release verbs registered (as siheyi/cli.py registers them)."""
    parser = argparse.ArgumentParser(prog="kiosk")
    release_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    """A release key made by ``kiosk release keygen``: (file, public hex)."""
    path = tmp_path / "release.key"
    assert run(["release", "keygen", "--out", str(path)]) == 0
    public = capsys.readouterr().out.strip()
    return path, public


@pytest.fixture
def served(
    any_database: Path | str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key: tuple[Path, str],
) -> Iterator[Served]:
    db = any_database
    add_user(db, "ops", "admin")
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SIHEYI_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("SIHEYI_SERVER_URL", raising=False)
    config = ServerConfig(
        database=str(db), releases=ReleaseSettings(key[1]), limits=LimitSettings(login_per_s=100)
    )
    with served_in_thread(lambda: release_app(config)) as url:
        yield Served(db, url, password_file)


def test_keygen_writes_a_private_key_once(key: tuple[Path, str]) -> None:
    path, public = key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(public) == 64 and int(public, 16) >= 0
    assert b"PRIVATE KEY" in path.read_bytes()
    assert run(["release", "keygen", "--out", str(path)]) == 1  # never overwritten


def test_publish_rollout_status_halt_resume_cancel(
    served: Served, key: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = make_wheel(tmp_path, "1.5.0")
    assert run(served.argv("publish", str(wheel), "--key", str(key[0]))) == 0
    assert "release 1.5.0" in capsys.readouterr().out
    with connect(served.db) as conn:
        row = conn.execute("SELECT filename, sha256, signature FROM releases").fetchone()
    assert row[1] == file_sha256(wheel)
    verify_release(key[1], "1.5.0", row[0], row[1], row[2])  # signed with the key given
    assert run(served.argv("publish", str(wheel), "--key", str(key[0]))) == 0
    assert "already published" in capsys.readouterr().out
    assert run(served.argv("list")) == 0
    assert wheel.name in capsys.readouterr().out
    assert run(served.argv("rollout", "1.5.0", "--site", "nowhere")) == 1
    assert "no site" in capsys.readouterr().err
    assert run(served.argv("rollout", "9.9.9")) == 1  # the API's call, as a verb to run
    assert "publish it first: kiosk release publish" in capsys.readouterr().err
    assert run(served.argv("rollout", "1.5.0", "--waves", "5,50,100", "--json")) == 0
    started = json.loads(capsys.readouterr().out)
    assert (started["waves"], started["state"]) == ([5.0, 50.0, 100.0], "running")
    assert run(served.argv("halt", str(started["id"]))) == 0
    assert "halted" in capsys.readouterr().out
    assert run(served.argv("status", str(started["id"]))) == 0
    detail = capsys.readouterr().out
    assert f"rollout {started['id']}: 1.5.0 to fleet, halted" in detail
    assert "COMMITTED" in detail.splitlines()[1]
    assert run(served.argv("resume", str(started["id"]))) == 0
    assert run(served.argv("cancel", str(started["id"]))) == 0
    capsys.readouterr()
    assert run(served.argv("resume", str(started["id"]))) == 1
    assert "cancelled" in capsys.readouterr().err
    assert run(served.argv("status")) == 0
    assert "cancelled" in capsys.readouterr().out


def test_a_wheel_signed_with_another_key_is_refused(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.key"
    assert run(["release", "keygen", "--out", str(other)]) == 0
    wheel = make_wheel(tmp_path, "1.5.0")
    capsys.readouterr()
    assert run(served.argv("publish", str(wheel), "--key", str(other))) == 1
    assert "not signed by the pinned release key" in capsys.readouterr().err


def test_the_version_is_the_wheels_metadata_version(
    served: Served, key: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Kiosks report the METADATA version: published under another, a release would be
    offered to them again and again."""
    wheel = make_wheel(tmp_path, "2.0.0")
    publish = served.argv("publish", str(wheel), "--key", str(key[0]))
    assert run([*publish, "--version", "2.0.0+pi"]) == 1
    assert "METADATA says '2.0.0'" in capsys.readouterr().err
    assert run([*publish, "--version", "2.0.0"]) == 0
    assert "release 2.0.0 " in capsys.readouterr().out
    renamed = tmp_path / "siheyi-2.0.1-py3-none-any.whl"
    renamed.write_bytes(wheel.read_bytes())
    assert run(served.argv("publish", str(renamed), "--key", str(key[0]))) == 1
    assert "names version '2.0.1'" in capsys.readouterr().err  # the server's check
    not_a_wheel = tmp_path / "x-1.0-py3-none-any.whl"
    not_a_wheel.write_bytes(b"nope")
    assert run(served.argv("publish", str(not_a_wheel), "--key", str(key[0]))) == 1
    assert "not a wheel" in capsys.readouterr().err


def test_unreachable_server_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    served = Served("", "http://127.0.0.1:9", tmp_path / "pw")
    (tmp_path / "pw").write_text(PASSWORD)
    assert run(served.argv("status")) == 2
    assert "error:" in capsys.readouterr().err
