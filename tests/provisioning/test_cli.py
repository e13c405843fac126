"""``kiosk provision`` verbs."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from provisioning import cli
from siheyi.cli import local_fleet


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kiosk")
    cli.register(parser.add_subparsers(dest="command", required=True), local_fleet)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def add(db: Path, bundle: Path, *extra: str) -> int:
    argv = ["provision", "add", "--serial", "SN-7", "--site", "site-a", "--gate", "g1"]
    argv += [
        "--server-url",
        "http://127.0.0.1:8080",
        "--bundle",
        str(bundle),
        "--database",
        str(db),
    ]
    return run(argv + list(extra))


def test_add_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, bundle = tmp_path / "s.db", tmp_path / "kiosk.json"
    assert add(db, bundle) == 0
    out = capsys.readouterr()
    secret = json.loads(bundle.read_text())["private_key"]
    assert secret not in out.out + out.err
    assert str(bundle) in out.out
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600

    assert add(db, bundle) == 1
    assert "serial exists" in capsys.readouterr().err
    assert json.loads(bundle.read_text())["private_key"] == secret  # untouched on failure

    assert add(db, bundle, "--rekey") == 0
    out = capsys.readouterr()
    new_secret = json.loads(bundle.read_text())["private_key"]
    assert new_secret != secret
    assert new_secret not in out.out + out.err

    assert run(["provision", "list", "--json", "--database", str(db)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(d["serial"], d["status"]) for d in listed] == [("SN-7", "active")]
    assert "private_key" not in json.dumps(listed)

    assert run(["provision", "revoke", "SN-7", "--database", str(db)]) == 0
    assert "revoked" in capsys.readouterr().out
    assert run(["provision", "list", "--database", str(db)]) == 0
    assert "revoked" in capsys.readouterr().out
    assert run(["provision", "revoke", "SN-nope", "--database", str(db)]) == 1


def registered(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'devices'").fetchone() is None:
            return []
        return [row[0] for row in conn.execute("SELECT serial FROM devices")]


def test_unwritable_bundle_registers_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    assert add(db, tmp_path / "no-such-dir" / "kiosk.json") == 1
    assert "cannot write bundle" in capsys.readouterr().err
    assert registered(db) == []
    # the serial is still free: a good destination works afterwards
    assert add(db, tmp_path / "kiosk.json") == 0
    assert registered(db) == ["SN-7"]


def test_read_only_bundle_directory_registers_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: permissions do not stop us
            pytest.skip("directory permissions are not enforced for this user")
        assert add(db, locked / "kiosk.json") == 1
        assert registered(db) == []
    finally:
        locked.chmod(0o700)


def test_bundle_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    assert add(db, tmp_path) == 1
    assert "is a directory" in capsys.readouterr().err
    assert registered(db) == []


def test_failed_registration_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, first, second = tmp_path / "s.db", tmp_path / "a.json", tmp_path / "b.json"
    assert add(db, first) == 0
    assert add(db, second) == 1  # serial exists
    assert "serial exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".json")) == ["a.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_existing_bundle_of_another_device_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, bundle = tmp_path / "s.db", tmp_path / "kiosk.json"
    assert add(db, bundle) == 0
    before = bundle.read_text()
    argv = ["provision", "add", "--serial", "SN-8", "--site", "site-a"]
    argv += ["--server-url", "http://h", "--bundle", str(bundle), "--database", str(db)]
    assert run(argv) == 1
    assert "bundle exists" in capsys.readouterr().err
    assert bundle.read_text() == before
    assert registered(db) == ["SN-7"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_bundle_rename_failure_keeps_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db, bundle = tmp_path / "s.db", tmp_path / "kiosk.json"

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "replace", failing_replace)
    assert add(db, bundle) == 1
    err = capsys.readouterr().err
    assert "device registered" in err
    [tmp] = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert str(tmp) in err
    assert json.loads(tmp.read_text())["serial"] == "SN-7"


@pytest.mark.parametrize("kind_of_bad", ["missing-dir", "not-sqlite"])
def test_database_problems_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind_of_bad: str
) -> None:
    if kind_of_bad == "missing-dir":
        bad = tmp_path / "nonexistent" / "x.db"
    else:
        bad = tmp_path / "notes.db"
        bad.write_bytes(b"not a database at all " * 100)
    bundle = tmp_path / "kiosk.json"
    for verb in ("add", "revoke", "list"):
        if verb == "add":
            code = add(bad, bundle)
        elif verb == "revoke":
            code = run(["provision", "revoke", "SN-7", "--database", str(bad)])
        else:
            code = run(["provision", "list", "--database", str(bad)])
        assert code == 2, verb
        err = capsys.readouterr().err
        assert err.startswith(f"error: {bad}: "), err
        assert "Traceback" not in err
    assert not bundle.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_config_selects_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "siheyi.toml"
    config.write_text('[server]\ndatabase = "fleet.db"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    argv = ["provision", "add", "--serial", "SN-9", "--site", "s", "--server-url", "http://h"]
    assert run([*argv, "--bundle", "b.json", "--config", str(config)]) == 0
    assert registered(etc / "fleet.db") == ["SN-9"]
    assert not (tmp_path / "siheyi.db").exists()
    assert run(["provision", "list", "--json", "--config", str(config)]) == 0
    capsys.readouterr()
    assert run(["provision", "revoke", "SN-9", "--config", str(config)]) == 0
    capsys.readouterr()
    assert run(["provision", "list", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "revoked"
    assert run(["provision", "list", "--config", str(etc / "missing.toml")]) == 2


def test_init_without_a_terminal_asks_for_a_password_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from siheyi.cli import main

    monkeypatch.delenv("SIHEYI_ADMIN_PASSWORD", raising=False)
    db = tmp_path / "fleet.db"
    assert main(["provision", "init", "--database", str(db), "--admin", "root"]) == 1
    assert "--password-file" in capsys.readouterr().err
    assert not db.exists()  # nothing half-applied
    secret = tmp_path / "pw"
    secret.write_text("correct horse battery staple\n")
    args = ["provision", "init", "--database", str(db), "--admin", "root"]
    assert main([*args, "--password-file", str(secret)]) == 0
