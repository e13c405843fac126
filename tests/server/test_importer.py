"""CSV import: validation per row, all-or-nothing by default, --skip-bad, CLI exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from core.idnumbers import make_id_number
from server import cli
from server.errors import ImportFormatError
from server.storage.db import connect, transaction
from server.verify.importer import UNKNOWN_SITE_HINT, RowError, import_csv

from .conftest import write_csv

A = make_id_number("110101", "19900307", "451")
B = make_id_number("310104", "19851111", "022")
C = make_id_number("440305", "20010203", "113")
BAD_SUM = A[:17] + ("0" if A[17] != "0" else "1")
HC = ["id_number", "colour", "reason", "updated_at"]


def count(db: Path, table: str) -> int:
    with connect(db) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_good_file_and_idempotent_reimport(tmp_path: Path, db_path: Path) -> None:
    csv = write_csv(
        tmp_path / "hc.csv",
        HC,
        [
            (A, "green", "", "2026-11-23T08:00:00+08:00"),
            (B, " Yellow ", "密接", "2026-11-23T00:00:00Z"),
        ],
    )
    report = import_csv(db_path, "health_code", csv)
    assert (report.ok, report.rows, report.imported, report.skipped) == (True, 2, 2, 0)
    report = import_csv(db_path, "health_code", csv)
    assert report.imported == 2
    assert count(db_path, "health_codes") == 2
    with connect(db_path) as conn:
        rows = conn.execute(
            "SELECT id_number, colour, updated_at FROM health_codes ORDER BY 1"
        ).fetchall()
    assert (A, "green", "2026-11-23T00:00:00+00:00") in rows  # normalised to UTC
    assert (B, "yellow", "2026-11-23T00:00:00+00:00") in rows


def test_upsert_replaces(tmp_path: Path, db_path: Path) -> None:
    write_csv(tmp_path / "1.csv", HC, [(A, "green", "", "2026-11-23T08:00:00+08:00")])
    write_csv(tmp_path / "2.csv", HC, [(A, "red", "密接", "2026-11-24T08:00:00+08:00")])
    import_csv(db_path, "health_code", tmp_path / "1.csv")
    import_csv(db_path, "health_code", tmp_path / "2.csv")
    with connect(db_path) as conn:
        assert conn.execute("SELECT colour, reason FROM health_codes").fetchall() == [
            ("red", "密接")
        ]


BAD_ROWS = [
    (A, "green", "", "2026-11-23T08:00:00+08:00"),  # row 2: good
    (BAD_SUM, "green", "", "2026-11-23T08:00:00+08:00"),  # row 3: checksum
    (B, "blue", "", "yesterday"),  # row 4: colour and date
    (C, "red", "", "2026-11-23T08:00:00"),  # row 5: no offset
    ("12345", "green", "", "2026-11-23T08:00:00+08:00"),  # row 6: shape
]


def test_bad_rows_reported_exactly_and_nothing_imported(tmp_path: Path, db_path: Path) -> None:
    csv = write_csv(tmp_path / "hc.csv", HC, BAD_ROWS)
    report = import_csv(db_path, "health_code", csv)
    assert not report.ok
    assert [(e.row, e.column) for e in report.errors] == [
        (3, "id_number"),
        (4, "colour"),
        (4, "updated_at"),
        (5, "updated_at"),
        (6, "id_number"),
    ]
    assert "check character" in report.errors[0].reason
    assert "UTC offset" in report.errors[3].reason
    assert (report.rows, report.imported, report.skipped) == (5, 0, 5)
    assert count(db_path, "health_codes") == 0


def test_skip_bad_imports_good_rows(tmp_path: Path, db_path: Path) -> None:
    csv = write_csv(tmp_path / "hc.csv", HC, BAD_ROWS)
    report = import_csv(db_path, "health_code", csv, skip_bad=True)
    assert (report.rows, report.imported, report.skipped) == (5, 1, 4)
    assert count(db_path, "health_codes") == 1


def test_field_count_and_header(tmp_path: Path, db_path: Path) -> None:
    path = tmp_path / "hc.csv"
    path.write_text(
        f"id_number,colour,reason,updated_at\n{A},green,,2026-11-23T08:00:00+08:00\n\n{B},green\n",
        encoding="utf-8",
    )
    report = import_csv(db_path, "health_code", path, skip_bad=True)
    assert report.errors == [RowError(4, "-", "expected 4 fields, got 2")]
    assert report.imported == 1

    path.write_text("id_number,color,reason,updated_at,extra\n", encoding="utf-8")
    report = import_csv(db_path, "health_code", path, skip_bad=True)
    assert {(e.row, e.column, e.reason) for e in report.errors} == {
        (1, "colour", "missing column"),
        (1, "color", "unknown column"),
        (1, "extra", "unknown column"),
    }
    path.write_text("", encoding="utf-8")
    assert import_csv(db_path, "health_code", path).errors[0].row == 1


def test_bom_and_column_order(tmp_path: Path, db_path: Path) -> None:
    path = tmp_path / "nat.csv"
    path.write_text(
        "\ufefflab,result,sampled_at,id_number\n金域,negative,2026-11-22T09:00:00+08:00,"
        + A
        + "\n",
        encoding="utf-8",
    )
    assert import_csv(db_path, "nat", path).imported == 1


def test_nat_vaccination_travel(tmp_path: Path, db_path: Path) -> None:
    nat = write_csv(
        tmp_path / "nat.csv",
        ["id_number", "sampled_at", "result", "lab"],
        [
            (A, "2026-11-22T09:00:00+08:00", "negative", "x"),
            (A, "2026-11-22T09:00:00+08:00", "positive", "x"),  # same key: upsert
            (A, "2026-11-20T09:00:00+08:00", "maybe", "x"),
        ],
    )
    report = import_csv(db_path, "nat", nat)
    assert [(e.row, e.column) for e in report.errors] == [(4, "result")]
    assert import_csv(db_path, "nat", nat, skip_bad=True).imported == 2
    assert count(db_path, "nat_results") == 1

    vac = write_csv(
        tmp_path / "vac.csv",
        ["id_number", "dose", "vaccinated_at", "vaccine"],
        [
            (A, "1", "2021-03-01", "科兴"),
            (A, "2", "2021-04-01T10:00:00+08:00", "科兴"),
            (A, "0", "2021-05-01", ""),
            (A, "two", "2021-05-01", ""),
            (A, "3", "01/05/2021", ""),
        ],
    )
    report = import_csv(db_path, "vaccination", vac, skip_bad=True)
    assert [(e.row, e.column) for e in report.errors] == [
        (4, "dose"),
        (5, "dose"),
        (6, "vaccinated_at"),
    ]
    with connect(db_path) as conn:
        assert conn.execute(
            "SELECT dose, vaccinated_at FROM vaccinations ORDER BY dose"
        ).fetchall() == [
            (1, "2021-03-01"),
            (2, "2021-04-01"),
        ]

    travel = write_csv(
        tmp_path / "travel.csv",
        ["id_number", "flagged", "area", "updated_at"],
        [
            (A, "TRUE", "上海", "2026-11-23T08:00:00+08:00"),
            (B, "no", "", "2026-11-23T08:00:00+08:00"),
            (C, "maybe", "", "2026-11-23T08:00:00+08:00"),
        ],
    )
    report = import_csv(db_path, "travel", travel, skip_bad=True)
    assert [(e.row, e.column) for e in report.errors] == [(4, "flagged")]
    with connect(db_path) as conn:
        assert dict(conn.execute("SELECT id_number, flagged FROM travel").fetchall()) == {
            A: 1,
            B: 0,
        }


def test_unknown_kind_and_missing_file(tmp_path: Path, db_path: Path) -> None:
    with pytest.raises(ImportFormatError, match="unknown kind"):
        import_csv(db_path, "passport", tmp_path / "x.csv")
    with pytest.raises(ImportFormatError, match="cannot read"):
        import_csv(db_path, "nat", tmp_path / "missing.csv")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kiosk")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    args = parse(argv)
    code: int = args.func(args)
    return code


def test_cli_exit_codes(tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_csv(tmp_path / "good.csv", HC, [(A, "green", "", "2026-11-23T08:00:00+08:00")])
    bad = write_csv(tmp_path / "bad.csv", HC, BAD_ROWS)
    assert run(["server", "import", "health_code", str(good), "--database", str(db_path)]) == 0
    assert "1 imported" in capsys.readouterr().out

    assert run(["server", "import", "health_code", str(bad), "--database", str(db_path)]) == 1
    captured = capsys.readouterr()
    assert "row 3, column id_number" in captured.out
    assert "nothing imported" in captured.err

    argv = [
        "server",
        "import",
        "health_code",
        str(bad),
        "--database",
        str(db_path),
        "--skip-bad",
        "--json",
    ]
    assert run(argv) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["imported"] == 1
    assert [e["row"] for e in report["errors"]] == [3, 4, 4, 5, 6]

    missing = ["server", "import", "nat", str(tmp_path / "nope.csv"), "--database", str(db_path)]
    assert run(missing) == 1
    assert "cannot read" in capsys.readouterr().err


def test_cli_rejects_unknown_kind() -> None:
    with pytest.raises(SystemExit):
        parse(["server", "import", "passport", "x.csv"])


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00"])
def test_timestamp_out_of_range_is_a_row_error(tmp_path: Path, db_path: Path, stamp: str) -> None:
    path = write_csv(tmp_path / "hc.csv", HC, [(A, "green", "", stamp)])
    report = import_csv(db_path, "health_code", path)
    assert [(e.row, e.column) for e in report.errors] == [(2, "updated_at")]
    assert "out of range" in report.errors[0].reason
    assert report.imported == 0


def test_permit_numbers_import_for_every_kind(tmp_path: Path, db_path: Path) -> None:
    permit = "CAN310087061235"
    files: dict[str, tuple[list[str], list[tuple[object, ...]]]] = {
        "health_code": (HC, [(permit.lower(), "green", "", "2026-11-23T08:00:00+08:00")]),
        "nat": (
            ["id_number", "sampled_at", "result", "lab"],
            [(permit, "2026-11-23T08:00:00+08:00", "negative", "")],
        ),
        "vaccination": (
            ["id_number", "dose", "vaccinated_at", "vaccine"],
            [(permit, 1, "2021-05-01", "")],
        ),
        "travel": (
            ["id_number", "flagged", "area", "updated_at"],
            [(permit, "no", "", "2026-11-23T08:00:00+08:00")],
        ),
    }
    for kind, (header, rows) in files.items():
        report = import_csv(db_path, kind, write_csv(tmp_path / f"{kind}.csv", header, rows))
        assert report.ok and report.imported == 1, (kind, report.errors)
    with connect(db_path) as conn:
        assert conn.execute("SELECT id_number FROM health_codes").fetchall() == [(permit,)]
    # still refused: wrong length or digits where letters belong
    bad = write_csv(
        tmp_path / "bad.csv",
        HC,
        [
            ("CA1310087061235", "green", "", "2026-11-23T08:00:00+08:00"),
            ("CAN31008706123", "green", "", "2026-11-23T08:00:00+08:00"),
        ],
    )
    assert [e.column for e in import_csv(db_path, "health_code", bad).errors] == ["id_number"] * 2


def not_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database, just some text" * 100)
    return path


@pytest.mark.parametrize("kind_of_bad", ["missing-dir", "not-sqlite"])
def test_cli_database_problems_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind_of_bad: str
) -> None:
    bad_db = (
        tmp_path / "nonexistent" / "x.db" if kind_of_bad == "missing-dir" else not_sqlite(tmp_path)
    )
    good = write_csv(tmp_path / "good.csv", HC, [(A, "green", "", "2026-11-23T08:00:00+08:00")])
    for argv in (
        ["server", "import", "health_code", str(good), "--database", str(bad_db)],
        ["server", "init-demo-data", "--people", "3", "--database", str(bad_db)],
        ["server", "run", "--database", str(bad_db), "--port", "0"],
    ):
        assert run(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"error: {bad_db}: "), err
        assert "Traceback" not in err


def test_cli_config_gives_the_same_database_as_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "siheyi.toml").write_text('[server]\ndatabase = "data.db"\n', encoding="utf-8")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    good = write_csv(tmp_path / "good.csv", HC, [(A, "green", "", "2026-11-23T08:00:00+08:00")])
    config = str(etc / "siheyi.toml")
    assert run(["server", "import", "health_code", str(good), "--config", config]) == 0
    assert count(etc / "data.db", "health_codes") == 1
    assert not (elsewhere / "siheyi.db").exists()
    assert run(["server", "init-demo-data", "--people", "3", "--config", config]) == 0
    assert str(etc / "data.db") in capsys.readouterr().out
    # --database overrides the config
    other = tmp_path / "other.db"
    argv = ["server", "import", "health_code", str(good), "--config", config]
    assert run([*argv, "--database", str(other)]) == 0
    assert count(other, "health_codes") == 1
    # a broken config is a configuration error
    (etc / "bad.toml").write_text("[server]\nport = -1\n", encoding="utf-8")
    assert run(["server", "init-demo-data", "--config", str(etc / "bad.toml")]) == 2
    assert "port" in capsys.readouterr().err


def test_site_people_import(
    tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with connect(db_path) as conn, transaction(conn):
        conn.execute("INSERT INTO sites (site) VALUES ('site-a'), ('site-b')")
    rows = [
        ("site-a", A),
        (" site-a ", A.lower()),  # same person again (trimmed, upper-cased): harmless
        ("site-b", A),
        ("site-a", B),
        ("", C),  # row 6: site required
        ("site-a", BAD_SUM),  # row 7: bad check character
        ("site-a\x01", C),  # row 8: control character
    ]
    path = write_csv(tmp_path / "sp.csv", ["site", "id_number"], rows)
    report = import_csv(db_path, "site_people", path)
    assert not report.ok and report.imported == 0
    assert [(e.row, e.column) for e in report.errors] == [
        (6, "site"),
        (7, "id_number"),
        (8, "site"),
    ]
    argv = ["server", "import", "site_people", str(path), "--database", str(db_path)]
    assert run([*argv, "--skip-bad"]) == 1
    out = capsys.readouterr().out
    assert "row 7, column id_number: wrong GB 11643 check character" in out
    assert "4 imported" in out
    with connect(db_path) as conn:
        stored = sorted(conn.execute("SELECT site, id_number FROM site_people"))
    assert stored == sorted([("site-a", A), ("site-b", A), ("site-a", B)])
    bad_header = write_csv(tmp_path / "h.csv", ["site", "id"], [("s", A)])
    report = import_csv(db_path, "site_people", bad_header)
    assert [(e.row, e.column, e.reason) for e in report.errors] == [
        (1, "id_number", "missing column"),
        (1, "id", "unknown column"),
    ]


def test_site_people_of_an_unknown_site_are_refused_unless_sites_are_created(
    tmp_path: Path, db_path: Path
) -> None:
    """A typo in a site name would expect people at a site no kiosk belongs to, silently."""
    with connect(db_path) as conn, transaction(conn):
        conn.execute("INSERT INTO sites (site) VALUES ('north')")
    path = write_csv(
        tmp_path / "sp.csv", ["site", "id_number"], [("north", A), ("nroth", B), ("nroth", C)]
    )
    report = import_csv(db_path, "site_people", path)
    assert report.imported == 0 and [(e.row, e.column) for e in report.errors] == [
        (3, "site"),
        (4, "site"),
    ]
    assert "unknown site 'nroth'" in str(report.errors[0])
    assert "--create-sites" in str(report.errors[0])
    skipped = import_csv(db_path, "site_people", path, skip_bad=True)
    assert (skipped.imported, skipped.skipped) == (1, 2)
    assert count(db_path, "sites") == 1
    created = import_csv(db_path, "site_people", path, create_sites=True)
    assert created.ok and created.imported == 3
    with connect(db_path) as conn:
        sites = sorted(row[0] for row in conn.execute("SELECT site FROM sites"))
        people = sorted(conn.execute("SELECT site, id_number FROM site_people"))
    assert sites == ["north", "nroth"]
    assert people == sorted([("north", A), ("nroth", B), ("nroth", C)])


def test_rows_with_the_same_problem_are_one_line(tmp_path: Path, db_path: Path) -> None:
    """2,000 rows naming one misspelled site are one line with their rows, not 2,000 lines
    (in the order the problems first occur); the JSON report keeps one error per row."""
    rows = [("nroth", A), ("north", B), ("nroth", C), ("nroth", B), ("nroth", A), ("x", C)]
    path = write_csv(tmp_path / "sp.csv", ["site", "id_number"], rows)
    report = import_csv(db_path, "site_people", path)
    assert report.grouped() == [
        f"rows 2, 4-6, column site: unknown site 'nroth' ({UNKNOWN_SITE_HINT})",
        f"row 3, column site: unknown site 'north' ({UNKNOWN_SITE_HINT})",
        f"row 7, column site: unknown site 'x' ({UNKNOWN_SITE_HINT})",
    ]
    assert len(report.to_json()["errors"]) == 6


def test_cli_groups_rows_with_the_same_problem(
    tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [("nroth", A), ("nroth", B), ("nroth", C)]
    path = write_csv(tmp_path / "sp.csv", ["site", "id_number"], rows)
    assert run(["server", "import", "site_people", str(path), "--database", str(db_path)]) == 1
    assert f"{path}: rows 2-4, column site: unknown site 'nroth'" in capsys.readouterr().out
