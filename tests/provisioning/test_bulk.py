"""``kiosk provision add --csv``: idempotent upsert by serial, per-row report, all in one go."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioning import registry
from provisioning.errors import InvalidField
from server.storage.db import connect
from tests.pgserver import dump_text
from tests.provisioning.fleets import local
from tests.provisioning.test_cli import run


def write(path: Path, rows: list[list[str]], header: str = "serial,site,gate,location") -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write(header + "\n")
        csv.writer(fh).writerows(rows)
    return path


def devices(db: Path) -> dict[str, tuple[str, str]]:
    with connect(db) as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT serial, site, gate FROM devices")}


@pytest.fixture
def db(any_database: Path | str) -> Path | str:
    path = any_database
    assert run(["provision", "site", "add", "north", "south", "--database", str(path)]) == 0
    return path


def test_5000_rows_with_10_bad_report_exactly_those_and_apply_the_rest(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [[f"SN-{i:05d}", "north" if i % 2 else "south", f"g{i % 7}", ""] for i in range(5000)]
    bad_lines: dict[int, str] = {}
    for n, index in enumerate(range(3, 5000, 500)):  # 10 bad rows, 10 different faults
        line = index + 2  # header is line 1
        kind = n % 5
        if kind == 0:
            rows[index][1] = "atlantis"  # unknown site
            bad_lines[line] = "unknown site"
        elif kind == 1:
            rows[index][0] = "bad serial!"
            bad_lines[line] = "serial must be"
        elif kind == 2:
            rows[index][1] = ""
            bad_lines[line] = "site must not be empty"
        elif kind == 3:
            rows[index] = rows[index][:2]  # too few fields
            bad_lines[line] = "2 fields"
        else:
            rows[index][3] = "x" * 300
            bad_lines[line] = "location must be"
    csv_path = write(tmp_path / "fleet.csv", rows)
    argv = ["provision", "add", "--csv", str(csv_path), "--database", str(db), "--json"]
    assert run(argv) == 1  # some rows refused
    report = json.loads(capsys.readouterr().out)
    assert report["created"] == 4990 and report["updated"] == 0
    assert sorted(e["row"] for e in report["errors"]) == sorted(bad_lines)
    for error in report["errors"]:
        assert bad_lines[error["row"]] in error["error"], error
    assert len(devices(db)) == 4990

    # idempotent: the same file again changes nothing, and reports the same 10 rows
    assert run(argv) == 1
    again = json.loads(capsys.readouterr().out)
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 4990)
    assert len(again["errors"]) == 10


def test_upsert_updates_placement_keyed_by_serial(db: Path, tmp_path: Path) -> None:
    base = ["provision", "add", "--database", str(db), "--csv"]
    assert run([*base, str(write(tmp_path / "a.csv", [["SN-1", "north", "g1", "door"]]))]) == 0
    first = registry.get_device(local(db), "SN-1")
    assert run([*base, str(write(tmp_path / "b.csv", [["SN-1", "south", "g2", ""]]))]) == 0
    moved = registry.get_device(local(db), "SN-1")
    assert moved.device_id == first.device_id and (moved.site, moved.gate) == ("south", "g2")


def test_duplicate_serials_malformed_csv_and_dry_run(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dup = write(tmp_path / "dup.csv", [["SN-1", "north", "", ""], ["SN-2", "north", "", ""],
                                      ["SN-1", "south", "", ""]])  # fmt: skip
    assert run(["provision", "add", "--csv", str(dup), "--database", str(db)]) == 1
    out = capsys.readouterr().out
    assert "rows 2, 4: serial SN-1 appears 2 times" in out and "1 created" in out
    assert devices(db) == {"SN-2": ("north", "")}

    no_header = tmp_path / "nohead.csv"
    no_header.write_text("SN-9,north\n", encoding="utf-8")
    assert run(["provision", "add", "--csv", str(no_header), "--database", str(db)]) == 1
    assert "header lacks column(s) serial, site" in capsys.readouterr().err
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"serial,site\n\xff\xfe\n")
    assert run(["provision", "add", "--csv", str(binary), "--database", str(db)]) == 1
    assert "not UTF-8" in capsys.readouterr().err

    new = write(tmp_path / "new.csv", [["SN-3", "north", "", ""], ["SN-4", "west", "", ""]])
    argv = ["provision", "add", "--csv", str(new), "--database", str(db)]
    assert run([*argv, "--dry-run"]) == 1
    assert "nothing written" in capsys.readouterr().out
    assert "SN-3" not in devices(db)
    assert run([*argv, "--all-or-nothing"]) == 1
    assert "SN-3" not in devices(db)
    assert run([*argv, "--create-sites"]) == 0
    assert {"SN-3", "SN-4"} <= set(devices(db))


def test_bundles_for_new_devices(db: Path, tmp_path: Path) -> None:
    rows = [[f"SN-{i}", "north", "g", ""] for i in range(5)]
    out = tmp_path / "bundles"
    result = registry.add_from_csv(
        local(db),
        write(tmp_path / "f.csv", rows),
        bundle_dir=out,
        server_url="https://fleet.example",
    )
    assert len(result.bundles) == 5 and not [p for p in out.iterdir() if p.name.startswith(".")]
    with connect(db) as conn:
        keys = dict(conn.execute("SELECT serial, public_key FROM devices"))
        dump = dump_text(conn)
    for path in result.bundles:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = json.loads(path.read_text())
        private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(data["private_key"]))
        assert private.public_key().public_bytes_raw().hex() == keys[data["serial"]]
        assert data["private_key"] not in dump
        assert data["server_url"] == "https://fleet.example"
    # re-running: existing devices get no new bundle, and an existing bundle is never clobbered
    again = registry.add_from_csv(local(db), write(tmp_path / "f.csv", rows), bundle_dir=out)
    assert again.bundles == [] and again.report.unchanged == 5


def test_bad_server_url(db: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidField):
        registry.add_from_csv(local(db), write(tmp_path / "f.csv", []), server_url="ftp://x")


def test_progress_bar_on_stderr(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "f.csv", [["SN-1", "north", "", ""]])
    assert run(["provision", "add", "--csv", str(path), "--database", str(db), "--progress"]) == 0
    assert "[##############################] 1/1" in capsys.readouterr().err


def test_status_list_filters_and_config(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [["SN-1", "north", "g1", ""], ["SN-2", "south", "g1", ""]]
    assert run(["provision", "add", "--csv", str(write(tmp_path / "f.csv", rows)), "--database",
                str(db)]) == 0  # fmt: skip
    capsys.readouterr()
    assert run(["provision", "quarantine", "SN-2", "--database", str(db)]) == 0
    assert (
        run(["provision", "list", "--status", "quarantined", "--json", "--database", str(db)]) == 0
    )
    out = capsys.readouterr().out
    assert [d["serial"] for d in json.loads(out[out.index("[") :])] == ["SN-2"]
    assert run(["provision", "release", "SN-2", "--database", str(db)]) == 0
    assert run(["provision", "rotate", "SN-1", "--database", str(db)]) == 0
    assert run(["provision", "status", "--site", "north", "--json", "--database", str(db)]) == 0
    out = capsys.readouterr().out
    [row] = json.loads(out[out.index("[") :])
    assert (row["serial"], row["online"], row["enrolled"]) == ("SN-1", False, False)
    base = ["provision", "config", "set", "--database", str(db)]
    assert run([*base, "verify.deadline_s", "1.0", "--fleet"]) == 0
    assert run([*base, "verify.deadline_s", "0.8", "--site", "north"]) == 0
    assert run([*base, "heartbeat.interval_s", "60", "--device", "SN-1"]) == 0
    assert "version 3" in capsys.readouterr().out
    assert run([*base, "verify.deadline_s", "1", "--site", "atlantis"]) == 1
    assert "unknown site" in capsys.readouterr().err
    assert run([*base, "Bad Key", "1", "--fleet"]) == 1
    # kiosks would ignore these, so the admin hears it now, not never
    assert run([*base, "voice.rate", "160", "--fleet"]) == 1
    assert "cannot be set remotely" in capsys.readouterr().err
    assert run([*base, "verify.deadline_s", "abc", "--fleet"]) == 1
    assert run([*base, "verify.deadline_s", "99", "--fleet"]) == 1
    assert "must be in" in capsys.readouterr().err
    assert run(["provision", "config", "list", "--database", str(db)]) == 0
    layers = json.loads(capsys.readouterr().out)
    assert [(x["scope"], x["key"], x["value"]) for x in layers] == [
        ("fleet", "verify.deadline_s", 1.0),
        ("site", "verify.deadline_s", 0.8),
        ("device", "heartbeat.interval_s", 60),
    ]
