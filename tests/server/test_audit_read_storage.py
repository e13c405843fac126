"""The audit trail's reads on both backends: filters, keyset pages, chain verification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from core.audit import hash_event
from core.wire_audit import AuditEventOut, ChainReport
from server.audit import chain, query
from server.storage.db import connect, transaction

from .audit_read_support import at, events, kiosk, store, three_kiosk_trail


def read_all(db: Path | str, filters: query.Filters, limit: int = 1000) -> list[dict[str, Any]]:
    """Every matching event, page by page."""
    out: list[dict[str, Any]] = []
    after = None
    with connect(db) as conn:
        while True:
            sql, params = query.page_query(filters, after, limit)
            page = [query.event(r) for r in conn.execute(sql, params).fetchall()]
            out += page
            if len(page) < limit:
                return out
            after = query.cursor_of(page[-1])


def keys(found: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(e["device_id"], e["seq"]) for e in found]


@pytest.fixture
def trail(db_path: Path | str) -> dict[str, str]:
    """Three kiosks at two sites; 20 events each, in 4 batches received 100 s apart."""
    return three_kiosk_trail(db_path)


def test_events_come_newest_first_with_placement_and_masked_ids_only(
    db_path: Path | str, trail: dict[str, str]
) -> None:
    found = read_all(db_path, query.Filters())
    assert len(found) == 60
    order = [query.cursor_of(e) for e in found]
    assert order == sorted(order, reverse=True)
    first = found[0]
    assert first["received_at"] == at(302) and first["site"] == "site-b"
    assert (first["device_id"], first["seq"], first["gate"]) == (trail["b1"], 20, "gate-1")
    assert "pseudonym" not in first
    for event in found:
        msgspec.convert(event, AuditEventOut)  # the documented shape
        assert event["masked_id"] in (None, "1101**********4514")


def these(kiosks: str, numbers: range | tuple[int, ...]) -> set[tuple[str, int]]:
    """``these("a1 b1", (1, 9))``: those events of those kiosks."""
    return {(k, n) for k in kiosks.split() for n in numbers}


ALL = range(1, 21)
F = query.Filters


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (F(sites=("site-a",)), these("a1 a2", ALL)),
        (F(sites=("site-a",), gate="gate-2"), these("a2", ALL)),
        (F(gate="gate-1", outcome="check"), these("a1 b1", (1, 9, 13, 17))),
        (F(kind="fault", sites=("site-b",)), these("b1", (5, 10, 15, 20))),
        (F(offline=False, device="a2", outcome="pass"), set()),
        (F(offline=True, device="a2", outcome="pass"), these("a2", (4, 8, 12, 16))),
        (F(since=at(100), until=at(200)), these("a1 a2 b1", range(6, 11))),
        (
            F(since=at(101), until=at(201)),
            these("a2 b1", range(6, 11)) | these("a1", range(11, 16)),
        ),
        (F(sites=()), set()),
        (F(sites=("site-zz",)), set()),
    ],
)
def test_filters(
    db_path: Path | str,
    trail: dict[str, str],
    filters: query.Filters,
    expected: set[tuple[str, int]],
) -> None:
    if filters.device is not None:
        filters = query.Filters(**{**filters.__dict__, "device": trail[filters.device]})
    names = {v: k for k, v in trail.items()}
    assert {(names[d], s) for d, s in keys(read_all(db_path, filters))} == expected


def test_pages_have_no_gap_or_duplicate_while_events_arrive(
    db_path: Path | str, trail: dict[str, str]
) -> None:
    """7 at a time, with a new batch stored (received later) between every two pages: the
    events there at the start all come, each once; the new ones never (they sort before
    the first page)."""
    before = keys(read_all(db_path, query.Filters()))
    seen: list[tuple[str, int]] = []
    after = None
    more = events(21, 60)
    second = 400
    with connect(db_path) as conn:
        while True:
            sql, params = query.page_query(query.Filters(), after, 7)
            page = [query.event(r) for r in conn.execute(sql, params).fetchall()]
            seen += keys(page)
            if len(page) < 7:
                break
            after = query.cursor_of(page[-1])
            batch, more = more[:2], more[2:]
            if batch:
                store(db_path, trail["a1"], batch, at(second))
                second += 1
    assert seen == before
    assert len(set(seen)) == len(seen) == 60


def test_a_cursor_survives_its_text_form_and_nothing_else_is_one() -> None:
    cursor = ("2026-11-23T00:00:07+00:00", "dev-1", "e1", 42)
    assert query.decode_cursor(query.encode_cursor(cursor)) == cursor
    for bad in ("", "abc", "W10", query.encode_cursor(cursor)[:-3], "eyJhIjoxfQ", "x" * 600):
        with pytest.raises(ValueError):
            query.decode_cursor(bad)


def check_chain(db: Path | str, device_id: str) -> dict[str, Any]:
    """What the chain route computes, read with a small page so paging is exercised."""
    with connect(db) as conn:
        check = chain.ChainCheck(
            device_id,
            conn.execute(chain.PROGRESS, (device_id,)).fetchall(),
            conn.execute(chain.CONFLICTS, (device_id,)).fetchall(),
        )
        after = None
        while True:
            sql, params = chain.page_query(device_id, after)
            rows = conn.execute(sql, (*params[:-1], 3)).fetchall()
            if not rows:
                break
            check.feed(rows)
            after = chain.last_position(rows)
    report = check.report()
    msgspec.convert(report, ChainReport)
    return report


def test_an_untouched_chain_verifies(db_path: Path | str, trail: dict[str, str]) -> None:
    report = check_chain(db_path, trail["a1"])
    assert report["ok"] and report["events"] == 20
    assert (report["breaks"], report["conflicts"], report["missing"]) == ([], 0, 0)
    assert report["epochs"][0]["acked_seq"] == 20


def tamper(db: Path | str, sql: str, params: tuple[Any, ...]) -> None:
    with connect(db) as conn, transaction(conn):
        conn.execute(sql, params)


@pytest.mark.parametrize(
    ("change", "breaks"),
    [
        ("outcome = 'pass' WHERE device_id = ? AND seq = 7", [7]),
        ("masked_id = '3101**********0000' WHERE device_id = ? AND seq = 3", [3]),
        ("latency_ms = 84 WHERE device_id = ? AND seq = 20", [20]),
        # a row rewritten with a hash of its own: its successor no longer links to it
        ("hash = 'ff' || substr(hash, 3) WHERE device_id = ? AND seq = 11", [11, 12]),
    ],
)
def test_a_changed_row_breaks_the_chain(
    db_path: Path | str, trail: dict[str, str], change: str, breaks: list[int]
) -> None:
    tamper(db_path, "UPDATE audit_events SET " + change, (trail["a1"],))
    report = check_chain(db_path, trail["a1"])
    assert not report["ok"] and report["breaks"] == breaks
    assert check_chain(db_path, trail["a2"])["ok"]  # another kiosk's chain is its own


def test_a_removed_row_is_missing(db_path: Path | str, trail: dict[str, str]) -> None:
    tamper(db_path, "DELETE FROM audit_events WHERE device_id = ? AND seq = 9", (trail["b1"],))
    report = check_chain(db_path, trail["b1"])
    assert not report["ok"] and report["missing"] == 1
    assert report["epochs"][0]["missing"] == [[9, 9]] and report["breaks"] == []


def test_events_pruned_from_the_start_are_not_a_fault(
    db_path: Path | str, trail: dict[str, str]
) -> None:
    tamper(db_path, "DELETE FROM audit_events WHERE device_id = ? AND seq <= 5", (trail["a2"],))
    report = check_chain(db_path, trail["a2"])
    assert report["ok"] and report["epochs"][0]["first_seq"] == 6 and report["events"] == 15


def test_conflicts_are_counted(db_path: Path | str, trail: dict[str, str]) -> None:
    other = events(1, 20, epoch="e1")
    other[3]["prompt"] = "另一个版本"
    other[3]["hash"] = hash_event(other[3])
    store(db_path, trail["a1"], other[3:4], at(900))
    report = check_chain(db_path, trail["a1"])
    assert not report["ok"] and report["conflicts"] == 1 and report["breaks"] == []


def test_several_epochs_and_other_spellings_of_the_same_values(db_path: Path | str) -> None:
    """A journal made before epochs (no ``epoch`` field), and a sender that leaves out null
    fields and writes whole numbers without a fraction: all verify."""
    device = kiosk(db_path, "SN-C1", "site-c")
    legacy = events(1, 4, epoch="")
    for e in legacy:
        del e["epoch"]
        e["prev_hash"] = legacy[e["seq"] - 2]["hash"] if e["seq"] > 1 else e["prev_hash"]
        for name in [k for k, v in e.items() if v is None]:
            del e[name]
        e["hash"] = hash_event(e)
    store(db_path, device, legacy, at(1))
    store(db_path, device, events(1, 3, epoch="e2"), at(2))
    report = check_chain(db_path, device)
    assert report["ok"], report
    assert [(e["epoch"], e["events"]) for e in report["epochs"]] == [("", 4), ("e2", 3)]
