"""``kiosk provision --server-url``: the same verbs through the admin API of a real server on
loopback, the admin token kept in a 0600 file and reused, one re-login when it is refused."""

from __future__ import annotations

import json
import socket
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from provisioning.remote import RemoteFleet
from server.app import create_app
from server.config import LimitSettings, ServerConfig
from tests.provisioning.fleets import local
from tests.provisioning.test_cli import run
from tests.threaded_server import served_in_thread

PASSWORD = "correct horse battery staple"


@dataclass
class Served:
    db: Path
    url: str
    password_file: Path
    tokens: Path

    def remote(self, *argv: str, admin: bool = True) -> list[str]:
        """``argv`` with the remote-mode flags."""
        login = ["--admin", "ops", "--password-file", str(self.password_file)] if admin else []
        return [*argv, "--server-url", self.url, *login]


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A fleet with an administrator, served by the real app on a loopback port."""
    db = tmp_path / "fleet.db"
    local(db).init_fleet(server_url=None, tls_ca=None, admin=("ops", PASSWORD))
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SIHEYI_ADMIN_PASSWORD", raising=False)
    config = replace(ServerConfig.default(database=db), limits=LimitSettings(login_per_s=100))
    with served_in_thread(lambda: create_app(config)) as url:
        yield Served(db, url, password_file, tmp_path / "config" / "siheyi" / "admin-tokens.json")


def _sql(db: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def test_sites_single_add_and_device_verbs(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(served.remote("provision", "site", "add", "north", "south")) == 0
    assert "2 site(s) added, 0 existed" in capsys.readouterr().out
    assert run(served.remote("provision", "site", "list")) == 0
    assert capsys.readouterr().out.split() == ["north", "south"]

    bundle = tmp_path / "kiosk.json"
    add = ["provision", "add", "--serial", "SN-7", "--site", "north", "--bundle", str(bundle)]
    assert run(served.remote(*add)) == 0
    out = capsys.readouterr()
    data = json.loads(bundle.read_text())
    assert data["private_key"] not in out.out + out.err and str(bundle) in out.out
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert data["server_url"] == served.url  # the fleet has no URL of its own
    assert _sql(served.db, "SELECT public_key FROM devices") == [(data["public_key"],)]
    assert _sql(served.db, "SELECT key_hex FROM site_keys") == [(data["site_key"],)]

    assert run(served.remote(*add)) == 1  # refused before the server is asked
    assert "bundle exists" in capsys.readouterr().err
    elsewhere = tmp_path / "again.json"
    assert run(served.remote(*add[:-1], str(elsewhere))) == 1
    assert "serial exists" in capsys.readouterr().err
    assert json.loads(bundle.read_text()) == data  # untouched
    assert not elsewhere.exists() and not list(tmp_path.glob(".*.tmp"))
    other = ["provision", "add", "--serial", "SN-8", "--site", "north", "--bundle", str(bundle)]
    assert run(served.remote(*other)) == 1
    assert "bundle exists" in capsys.readouterr().err
    assert _sql(served.db, "SELECT serial FROM devices") == [("SN-7",)]  # refused up front
    assert run(served.remote(*add, "--rekey")) == 0
    assert json.loads(bundle.read_text())["private_key"] != data["private_key"]

    for verb, word in (("quarantine", "quarantined"), ("release", "released"),
                       ("rotate", "rotation requested"), ("revoke", "revoked")):  # fmt: skip
        assert run(served.remote("provision", verb, "SN-7")) == 0
        assert word in capsys.readouterr().out
    assert run(served.remote("provision", "release", "SN-7")) == 1  # revocation is final
    assert "revoked" in capsys.readouterr().err
    assert run(served.remote("provision", "revoke", "SN-404")) == 1
    assert "SN-404" in capsys.readouterr().err
    assert run(served.remote("provision", "add", *add[2:], "--rekey")) == 1


def test_csv_list_status_config_match_local_mode(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(served.remote("provision", "site", "add", "north")) == 0
    capsys.readouterr()
    csv_path = tmp_path / "fleet.csv"
    csv_path.write_text(
        "serial,site,gate,location\nSN-1,north,g1,\nSN-2,atlantis,g1,\nbad serial!,north,,\n"
        "SN-3,north\nSN-4,north,g2,door\n",
        encoding="utf-8",
    )
    out_dir = tmp_path / "bundles"
    argv = ["provision", "add", "--csv", str(csv_path), "--bundle-dir", str(out_dir), "--json"]
    assert run(served.remote(*argv)) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["created"] == 2 and "bundle" not in report
    assert [(e["row"], e["error"].split(":")[0]) for e in report["errors"]] == [
        (3, "row 3"),
        (4, "row 4"),
        (5, "row 5"),
    ]
    keys = {r[0]: r[1] for r in _sql(served.db, "SELECT serial, public_key FROM devices")}
    for path in sorted(out_dir.iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        written = json.loads(path.read_text())
        assert keys[written["serial"]] == written["public_key"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["SN-1.json", "SN-4.json"]

    assert run(served.remote("provision", "quarantine", "SN-4")) == 0
    capsys.readouterr()
    for verb in (["list", "--json"], ["status", "--json", "--site", "north"]):
        assert run(served.remote("provision", *verb)) == 0
        remote = json.loads(capsys.readouterr().out)
        assert run(["provision", *verb, "--database", str(served.db)]) == 0
        assert json.loads(capsys.readouterr().out) == remote
        assert [d["serial"] for d in remote] == ["SN-1", "SN-4"]

    code = ["provision", "enrol-code", "SN-1", "--ttl", "5"]
    assert run(served.remote(*code)) == 0
    assert "single use" in capsys.readouterr().out
    base = ["provision", "config", "set", "verify.deadline_s"]
    assert run(served.remote(*base, "0.8", "--site", "north")) == 0
    assert "version 1" in capsys.readouterr().out
    assert run(served.remote(*base, "0.8", "--site", "atlantis")) == 1
    assert "unknown site" in capsys.readouterr().err
    assert run(served.remote("provision", "config", "set", "voice.rate", "160", "--fleet")) == 1
    assert "cannot be set remotely" in capsys.readouterr().err
    assert run(served.remote("provision", "config", "list")) == 0
    layers = json.loads(capsys.readouterr().out)
    assert [(x["scope"], x["target"], x["value"]) for x in layers] == [("site", "north", 0.8)]


def test_token_file_is_private_and_reused(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(served.remote("provision", "list")) == 0
    assert stat.S_IMODE(served.tokens.stat().st_mode) == 0o600
    assert stat.S_IMODE(served.tokens.parent.stat().st_mode) == 0o700
    saved = json.loads(served.tokens.read_text())
    assert saved[served.url]["username"] == "ops" and PASSWORD not in served.tokens.read_text()
    served.password_file.unlink()  # no password anywhere now: only the token can work
    assert run(served.remote("provision", "site", "list", admin=False)) == 0
    assert len(_sql(served.db, "SELECT * FROM admin_tokens")) == 1  # one login in all


def test_wrong_password_is_a_clear_error(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    served.password_file.write_text("not the password\n", encoding="utf-8")
    assert run(served.remote("provision", "list")) == 2
    err = capsys.readouterr().err
    assert "wrong user name or password" in err and "Traceback" not in err
    assert not served.tokens.exists()
    assert run(served.remote("provision", "list", admin=False)) == 2
    assert "--admin USER" in capsys.readouterr().err  # no saved login to fall back on


def test_refused_or_expired_token_costs_one_login(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(served.remote("provision", "list")) == 0
    first = json.loads(served.tokens.read_text())[served.url]
    _sql(served.db, "DELETE FROM admin_tokens")  # the server forgot it (purged, restored, …)
    logins = 0
    real_login = RemoteFleet._login

    def counting(self: RemoteFleet, username: str | None = None) -> str:
        nonlocal logins
        logins += 1
        return real_login(self, username)

    monkeypatch.setattr(RemoteFleet, "_login", counting)
    assert run(served.remote("provision", "list")) == 0
    assert logins == 1
    second = json.loads(served.tokens.read_text())[served.url]
    assert second["token"] != first["token"]

    expired = {**second, "expires_at": "2020-01-01T00:00:00+00:00"}
    served.tokens.write_text(json.dumps({served.url: expired}), encoding="utf-8")
    assert run(served.remote("provision", "list")) == 0
    assert logins == 2  # an expired token is not even tried

    _sql(served.db, "DELETE FROM admin_tokens")
    served.password_file.unlink()
    assert run(served.remote("provision", "list", admin=False)) == 1
    assert "--password-file" in capsys.readouterr().err  # asks, never loops
    assert logins == 3 and not served.tokens.read_text().count("token")


def test_unreachable_server_and_mixed_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("SIHEYI_ADMIN_PASSWORD", PASSWORD)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    url = f"http://127.0.0.1:{port}"
    assert run(["provision", "list", "--server-url", url, "--admin", "ops"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {url}: ")
    db = tmp_path / "x.db"
    assert run(["provision", "list", "--database", str(db), "--admin", "ops"]) == 1
    assert "--admin and --password-file go with --server-url" in capsys.readouterr().err
    assert run(["provision", "list", "--server-url", "ftp://x", "--admin", "ops"]) == 1


def test_bulk_report_reads_the_same_in_both_modes(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Grouped ``row N:`` lines and the summary, word for word, through the API or not."""
    assert run(served.remote("provision", "site", "add", "north")) == 0
    csv_path = tmp_path / "fleet.csv"
    csv_path.write_text(
        "serial,site\nSN-1,north\nSN-2,atlantis\nbad serial!,north\nSN-4,atlantis\n",
        encoding="utf-8",
    )
    argv = ["provision", "add", "--csv", str(csv_path), "--dry-run"]
    capsys.readouterr()
    assert run(served.remote(*argv)) == 1
    remote = capsys.readouterr().out
    assert run([*argv, "--database", str(served.db)]) == 1
    assert capsys.readouterr().out == remote
    assert f"{csv_path}: rows 3, 5: unknown site 'atlantis' (kiosk provision site add," in remote
    assert f"{csv_path}: row 4: serial must be" in remote
