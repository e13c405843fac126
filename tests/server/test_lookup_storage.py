"""The lookup's storage on both backends: phones imported as keyed hashes only, the audit
rows that are also the per-guard rate limit, and the source history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.idnumbers import make_id_number, mask
from server.lookup import store
from server.lookup.phones import PHONE_SECRET, find_person
from server.storage.db import connect
from server.verify.importer import import_csv
from tests.pgserver import dump_text

from .conftest import write_csv

A = make_id_number("110101", "19900307", "451")
B = make_id_number("310104", "19851111", "022")
BAD_SUM = A[:17] + ("0" if A[17] != "0" else "1")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_phones_import_as_keyed_hashes_only(tmp_path: Path, db_path: Path) -> None:
    rows = [
        (A, "138 0013 8000"),
        (B, "+86 139-0013-9000"),
        (B, "+852 9123 4567"),  # a second phone of the same person
        (A, "12345"),  # row 5: not a phone
        (BAD_SUM, "13700137000"),  # row 6: bad check character
    ]
    path = write_csv(tmp_path / "phones.csv", ["id_number", "phone"], rows)
    report = import_csv(db_path, "phones", path)
    assert [(e.row, e.column) for e in report.errors] == [(5, "phone"), (6, "id_number")]
    assert all("12345" not in e.reason for e in report.errors)  # never echoed
    assert report.imported == 0  # all or nothing by default
    report = import_csv(db_path, "phones", path, skip_bad=True)
    assert report.imported == 3
    with connect(db_path) as conn:
        assert find_person(conn, "+8613800138000") == A
        assert find_person(conn, "+8613900139000") == B
        assert find_person(conn, "+85291234567") == B
        assert find_person(conn, "+8613700137000") is None
        stored = conn.execute("SELECT phone_hash FROM person_phones").fetchall()
        assert all(len(h) == 64 for (h,) in stored) and len(stored) == 3
        assert conn.execute(
            "SELECT COUNT(*) FROM server_secrets WHERE name = ?", (PHONE_SECRET,)
        ).fetchone() == (1,)
        dump = dump_text(conn)
    for clear in ("13800138000", "13900139000", "91234567", "138 0013", "0013-8000"):
        assert clear not in dump


def test_phone_reimport_moves_the_number(tmp_path: Path, db_path: Path) -> None:
    header = ["id_number", "phone"]
    import_csv(db_path, "phones", write_csv(tmp_path / "1.csv", header, [(A, "13800138000")]))
    import_csv(db_path, "phones", write_csv(tmp_path / "2.csv", header, [(B, "13800138000")]))
    with connect(db_path) as conn:
        assert find_person(conn, "+8613800138000") == B
        assert conn.execute("SELECT COUNT(*) FROM person_phones").fetchone() == (1,)


def reserve(db_path: Path, now: datetime, user: str = "g1") -> store.Reservation:
    with connect(db_path) as conn:
        return store.reserve(
            conn,
            username=user,
            site="site-a",
            by="id",
            masked_id=mask(A),
            now=now,
            max_per_window=3,
            window_s=60,
        )


def test_reservations_are_the_rate_limit(db_path: Path) -> None:
    first = reserve(db_path, NOW)
    assert first.lookup_id is not None and first.retry_after_s == 0
    assert reserve(db_path, NOW + timedelta(seconds=10)).lookup_id is not None
    assert reserve(db_path, NOW + timedelta(seconds=20)).lookup_id is not None
    refused = reserve(db_path, NOW + timedelta(seconds=30))
    assert refused.lookup_id is None
    assert refused.retry_after_s == 30  # the first leaves the window at +60 s
    assert reserve(db_path, NOW + timedelta(seconds=30), user="g2").lookup_id is not None
    assert reserve(db_path, NOW + timedelta(seconds=61)).lookup_id is not None
    with connect(db_path) as conn:
        store.finish(conn, first.lookup_id, mask(B), "pass")
        rows = conn.execute(
            "SELECT id, username, site, masked_id, by, outcome FROM guard_lookups ORDER BY id"
        ).fetchall()
    assert len(rows) == 5  # a refused attempt is not a lookup
    assert rows[0] == (first.lookup_id, "g1", "site-a", mask(B), "id", "pass")
    assert [r[5] for r in rows[1:]] == [store.PENDING] * 4
    assert len({r[0] for r in rows}) == 5


def test_history_newest_first(tmp_path: Path, db_path: Path) -> None:
    nat = [(A, f"2026-11-2{d}T08:00:00+08:00", "negative", f"lab{d}") for d in range(1, 8)]
    import_csv(
        db_path,
        "nat",
        write_csv(tmp_path / "nat.csv", ["id_number", "sampled_at", "result", "lab"], nat),
    )
    vac = [(A, d, f"2021-0{d}-10", "科兴中维") for d in (2, 1)]
    import_csv(
        db_path,
        "vaccination",
        write_csv(tmp_path / "v.csv", ["id_number", "dose", "vaccinated_at", "vaccine"], vac),
    )
    with connect(db_path) as conn:
        found = store.history(conn, A, 3)
        nobody = store.history(conn, B, 3)
    assert [lab for _, _, lab in found.nat] == ["lab7", "lab6", "lab5"]
    assert found.nat[0][1] == "2026-11-27T00:00:00+00:00"
    assert found.doses == [(1, "2021-01-10", "科兴中维"), (2, "2021-02-10", "科兴中维")]
    assert (nobody.nat, nobody.doses) == ([], [])
