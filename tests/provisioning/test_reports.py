"""What ``kiosk provision`` prints for a person (issue 14): every refused row of a bulk add
with its ``row N:``, rows of one reason grouped, a dry run that would change nothing saying
so, a status table with its headings, and a pipe closed early (``| head -1``) ending quietly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.provisioning.test_cli import run

BAD_CSV = (
    "serial,site,gate,location\n"
    "SN-1,north,g1,\n"  # 2: good
    "SN-2,atlantis,g1,\n"  # 3: unknown site
    "bad serial!,north,,\n"  # 4: bad serial
    "SN-4,atlantis,,\n"  # 5: unknown site
    "SN-5,north\n"  # 6: too few fields
    "SN-6,atlantis,,\n"  # 7: unknown site
    "SN-7,north,,\n"  # 8: duplicate serial
    "SN-7,north,,\n"  # 9: duplicate serial
    "SN-10\n"  # 10: one field
)


@pytest.fixture
def db(any_database: Path | str) -> str:
    assert run(["provision", "site", "add", "north", "--database", str(any_database)]) == 0
    return str(any_database)


def _add(
    db: str, csv_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, list[str]]:
    capsys.readouterr()
    status = run(["provision", "add", "--csv", str(csv_path), "--database", db, *extra])
    return status, capsys.readouterr().out.splitlines()


def test_every_refused_row_has_its_number_and_one_reason_one_line(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = tmp_path / "fleet.csv"
    csv_path.write_text(BAD_CSV, encoding="utf-8")
    status, lines = _add(db, csv_path, capsys, "--dry-run")
    assert status == 1
    assert [line.removeprefix(f"{csv_path}: ") for line in lines[:-1]] == [
        "rows 3, 5, 7: unknown site 'atlantis' (kiosk provision site add, or --create-sites)",
        "row 4: serial must be 1-64 characters of A-Z a-z 0-9 _ . : -",
        "row 6: 2 fields, the header has 4",
        "rows 8, 9: serial SN-7 appears 2 times in the input",
        "row 10: 1 field, the header has 4",
    ]
    assert (
        lines[-1]
        == "9 row(s): 1 to create, 0 to update, 0 unchanged, 8 refused; dry run, nothing written"
    )


def test_json_report_gives_every_error_its_row(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = tmp_path / "fleet.csv"
    csv_path.write_text(BAD_CSV, encoding="utf-8")
    status, lines = _add(db, csv_path, capsys, "--dry-run", "--json")
    report = json.loads("\n".join(lines))
    assert status == 1 and len(report["errors"]) == 8
    assert all(e["error"].startswith(f"row {e['row']}: ") for e in report["errors"])
    (new,) = report["devices"]
    assert new["device_id"] is None  # a dry run invents no ids


def test_a_dry_run_of_bad_rows_only_says_nothing_would_change(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("serial,site\nSN-1,atlantis\nSN-2,atlantis\n", encoding="utf-8")
    status, lines = _add(db, csv_path, capsys, "--dry-run")
    assert status == 1
    assert lines[-1].endswith("2 refused; nothing would change")
    status, lines = _add(db, csv_path, capsys)
    assert lines[-1].endswith("2 refused; nothing changed")


def test_status_has_a_header_the_gate_and_the_skew(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["provision", "status", "--database", db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["0 device(s): 0 online, 0 offline, 0 unhealthy", "versions: -"]
    assert lines[2].split()[:3] == ["SERIAL", "SITE", "GATE"] and "SKEW" in lines[2].split()
    csv_path = tmp_path / "fleet.csv"
    csv_path.write_text("serial,site,gate\nSN-1,north,east-3\n", encoding="utf-8")
    assert run(["provision", "add", "--csv", str(csv_path), "--database", db]) == 0
    capsys.readouterr()
    assert run(["provision", "status", "--database", db]) == 0
    row = capsys.readouterr().out.splitlines()[3].split()
    assert row[:3] == ["SN-1", "north", "east-3"]


def test_a_reader_that_stops_early_ends_it_quietly(tmp_path: Path) -> None:
    """``kiosk provision status | head -1``: the pipe is closed before anything is written,
    which is what ``head`` does to the rest of a long table."""
    db = tmp_path / "siheyi.db"
    kiosk = [sys.executable, "-m", "siheyi.cli", "provision"]
    subprocess.run([*kiosk, "site", "add", "north", "--database", str(db)], check=True,
                   capture_output=True)  # fmt: skip
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [*kiosk, "status", "--database", str(db)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (0, "")
