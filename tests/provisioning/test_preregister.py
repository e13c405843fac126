"""``kiosk provision add --serial S --site X`` without ``--bundle`` pre-registers the kiosk: it
makes its own key and enrols with a code, as ``add --csv`` without ``--bundle-dir`` does
(README quick start, step 2; issue 14). Locally and through the admin API alike."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.provisioning.test_cli import run
from tests.provisioning.test_remote import Served, served

__all__ = ["served"]  # the fixture, for pytest

ADD = ["provision", "add", "--serial", "SN123", "--site", "east-gate", "--gate", "g2"]


def _rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT serial, site, gate, public_key, status FROM devices").fetchall()


def _preregisters(
    db: Path, with_mode: Callable[..., list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(with_mode(*ADD)) == 0
    out = capsys.readouterr().out
    assert "SN123" in out and "enrol-code SN123" in out
    [(serial, site, gate, key, _)] = _rows(db)
    assert (serial, site, gate, key) == ("SN123", "east-gate", "g2", None)
    assert run(with_mode("provision", "enrol-code", "SN123")) == 0
    assert "SN123" in capsys.readouterr().out

    moved = [*ADD[:5], "elsewhere"]
    assert run(with_mode(*moved)) == 1  # a known serial is refused, and not moved
    assert "serial exists" in capsys.readouterr().err
    assert _rows(db)[0][1] == "east-gate"
    assert run(with_mode(*ADD, "--rekey")) == 2  # a new key needs a bundle to go into
    assert "--bundle" in capsys.readouterr().err


def test_local(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "fleet.db"
    _preregisters(db, lambda *argv: [*argv, "--database", str(db)], capsys)


def test_remote(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    _preregisters(served.db, served.remote, capsys)
