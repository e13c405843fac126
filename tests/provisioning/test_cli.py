"""``kiosk provision`` verbs."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest

from provisioning import cli


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kiosk")
    cli.register(parser.add_subparsers(dest="command", required=True))
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
    secret = json.loads(bundle.read_text())["secret"]
    assert secret not in out.out + out.err
    assert str(bundle) in out.out
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600

    assert add(db, bundle) == 1
    assert "serial exists" in capsys.readouterr().err
    assert json.loads(bundle.read_text())["secret"] == secret  # untouched on failure

    assert add(db, bundle, "--rotate-secret") == 0
    out = capsys.readouterr()
    new_secret = json.loads(bundle.read_text())["secret"]
    assert new_secret != secret
    assert new_secret not in out.out + out.err

    assert run(["provision", "list", "--json", "--database", str(db)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(d["serial"], d["status"]) for d in listed] == [("SN-7", "active")]
    assert "secret" not in json.dumps(listed)

    assert run(["provision", "revoke", "SN-7", "--database", str(db)]) == 0
    assert "revoked" in capsys.readouterr().out
    assert run(["provision", "list", "--database", str(db)]) == 0
    assert "revoked" in capsys.readouterr().out
    assert run(["provision", "revoke", "SN-nope", "--database", str(db)]) == 1
