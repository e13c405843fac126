"""``kiosk audit query|export|verify-chain`` against a real server on loopback, logged in as
an auditor and as a guard, on SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import csv
import io
import json
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from server.config import LimitSettings, ServerConfig
from server.storage.db import connect, transaction
from siheyi import audit_cli
from tests.server.audit_read_support import at, audit_app, events, kiosk, store
from tests.server.users_support import PASSWORD, add_user
from tests.threaded_server import served_in_thread


@dataclass
class Served:
    db: Path | str
    url: str
    password_file: Path
    tokens: Path
    ids: dict[str, str]

    def argv(self, *words: str, user: str | None = "aud") -> list[str]:
        login = ["--user", user, "--password-file", str(self.password_file)] if user else []
        return ["audit", *words, "--server-url", self.url, *login]


def run(argv: list[str]) -> int:
    """``kiosk …`` with only the audit verbs registered (as siheyi/cli.py registers them)."""
    parser = argparse.ArgumentParser(prog="kiosk")
    audit_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def served(
    any_database: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Served]:
    """Kiosks a1 (site-a) and b1 (site-b) with 20 events each, an auditor and a guard of
    site-a, and the real app on a loopback port."""
    db = any_database
    ids = {"a1": kiosk(db, "SN-A1", "site-a"), "b1": kiosk(db, "SN-B1", "site-b")}
    for i, device_id in enumerate(ids.values()):
        store(db, device_id, events(1, 10), at(i))
        store(db, device_id, events(1, 20)[10:], at(10 + i))
    add_user(db, "aud", "auditor")
    add_user(db, "gus", "guard", ["site-a"])
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SIHEYI_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("SIHEYI_SERVER_URL", raising=False)
    config = replace(ServerConfig.default(database=db), limits=LimitSettings(login_per_s=100))
    tokens = tmp_path / "config" / "siheyi" / "user-tokens.json"
    with served_in_thread(lambda: audit_app(config)) as url:
        yield Served(db, url, password_file, tokens, ids)


def test_query_prints_a_table_follows_pages_and_keeps_the_token(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(served.argv("query", "--limit", "15")) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split() == list(audit_cli.HEADER) and len(lines) == 16
    assert lines[1].split()[:5] == [at(11), "site-b", "gate-1", served.ids["b1"], "20"]
    assert "more: --cursor " in out.err
    assert stat.S_IMODE(served.tokens.stat().st_mode) == 0o600
    cursor = out.err.split("more: --cursor ")[1].split()[0]
    # the kept token: no --user, no password needed
    assert run(served.argv("query", "--limit", "15", "--cursor", cursor, user=None)) == 0
    assert len(capsys.readouterr().out.splitlines()) == 16
    assert run(served.argv("query", "--all", "--limit", "7", "--json")) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(found) == 40 and len({(e["device_id"], e["seq"]) for e in found}) == 40
    assert all("pseudonym" not in e for e in found)


def test_filters_and_refusals(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    argv = served.argv("query", "--json", "--site", "site-a", "--kind", "fault", "--online")
    assert run(argv) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["device_id"], e["seq"]) for e in found] == [(served.ids["a1"], s) for s in (15, 5)]
    assert run(served.argv("query", "--since", "last tuesday")) == 1
    assert "since" in capsys.readouterr().err
    assert run(served.argv("query", "--site", "site-b", user="gus")) == 1
    assert "not one of your sites" in capsys.readouterr().err
    bad = served.password_file.with_name("bad")
    bad.write_text("wrong password!", encoding="utf-8")
    argv = ["audit", "query", "--server-url", served.url, "--user", "aud", "--password-file"]
    served.tokens.unlink()  # else the kept token is used: no password asked
    assert run([*argv, str(bad)]) == 2
    assert "login refused" in capsys.readouterr().err


def test_export_writes_csv_and_json_files_or_stdout(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.csv"
    assert run(served.argv("export", "--output", str(target), user="gus")) == 0
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert len(rows) == 20 and {r["site"] for r in rows} == {"site-a"}
    assert "written to" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*.part"))
    assert run(served.argv("export", "--format", "json", "--outcome", "check")) == 0
    exported = json.loads(capsys.readouterr().out)
    assert sorted((e["device_id"], e["seq"]) for e in exported) == sorted(
        (d, s) for d in served.ids.values() for s in (1, 9, 13, 17)
    )
    kept = target.read_bytes()
    assert run(served.argv("export", "--output", str(target), "--site", "site-b", user="gus")) == 1
    assert target.read_bytes() == kept and not list(tmp_path.glob(".*.part"))


def test_verify_chain_exits_1_on_a_break(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    device = served.ids["a1"]
    assert run(served.argv("verify-chain", device)) == 0
    assert f"{device}: ok: 20 event(s) in 1 epoch(s), 0 break(s)" in capsys.readouterr().out
    with connect(served.db) as conn, transaction(conn):
        conn.execute(
            "UPDATE audit_events SET masked_id = NULL WHERE device_id = ? AND seq = 6", (device,)
        )
    assert run(served.argv("verify-chain", device)) == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out and "breaks at seq 6;" in out
    assert run(served.argv("verify-chain", device, "--json")) == 1
    assert json.loads(capsys.readouterr().out)["breaks"] == [6]
    assert run(served.argv("verify-chain", served.ids["b1"], user="gus")) == 1
    assert "not one of your sites" in capsys.readouterr().err


def test_a_server_that_is_not_there_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    argv = ["audit", "verify-chain", "k-1", "--server-url", f"http://127.0.0.1:{port}"]
    password = tmp_path / "pw"
    password.write_text(PASSWORD, encoding="utf-8")
    assert run([*argv, "--user", "x", "--password-file", str(password)]) == 2
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
    assert run(["audit", "query"]) == 1
    assert "--server-url" in capsys.readouterr().err
