"""Audit at scale (issue 11, part 4): one statement per batch, idempotent replays, monthly
partitions on PostgreSQL, and one kiosk uploading twice at once through two connections."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from server.audit import partitions
from server.audit.ingestion import AuditEvent, IngestResult, ingest, parse_batch
from server.storage.connection import Connection, dialect_of
from server.storage.db import connect, open_connection
from server.storage.postgres import PgConnection

from .test_audit import GENESIS, event_hash

RECEIVED = "2026-11-23T00:00:00+00:00"


def journal(
    first: int,
    last: int,
    *,
    prev: str = GENESIS,
    wall: str = "2026-11-23T08:00:00+08:00",
    epoch: str = "e" * 32,
    boot: str = "boot-1",
) -> list[dict[str, Any]]:
    """Events first..last of one journal epoch as a kiosk writes them, all at ``wall``."""
    events = []
    for seq in range(first, last + 1):
        event: dict[str, Any] = {
            "epoch": epoch,
            "seq": seq,
            "wall_time": wall,
            "mono_ns": seq,
            "boot_id": boot,
            "clock_trusted": True,
            "kind": "decision",
            "outcome": "pass",
            "offline": False,
            "detail": {"tap_id": f"t-{seq}"},
            "prev_hash": prev,
        }
        event["hash"] = prev = event_hash(event)
        events.append(event)
    return events


def parsed(events: list[dict[str, Any]]) -> list[AuditEvent]:
    return parse_batch({"events": events})


def upload(
    target: Path | str, events: list[dict[str, Any]], received: str = RECEIVED, device: str = "k1"
) -> IngestResult:
    """``ingest`` as the server calls it, on a connection of its own."""
    with connect(target) as conn:
        return ingest(conn, device, parsed(events), received)


def rows(target: Path | str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    with connect(target) as conn:
        return [tuple(r) for r in conn.execute(sql, tuple(params)).fetchall()]


class _CountingRaw:
    """A psycopg connection that remembers the statements it ran."""

    def __init__(self, raw: Any, seen: list[str]) -> None:
        self._raw, self._seen = raw, seen

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        self._seen.append(str(query))
        return self._raw.execute(query, params, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


@contextmanager
def statements(target: Path | str) -> Iterator[tuple[Connection, list[str]]]:
    """A connection and the list of every statement it sends, on either backend."""
    seen: list[str] = []
    with connect(target) as conn:
        if isinstance(conn, sqlite3.Connection):
            conn.set_trace_callback(seen.append)
            yield conn, seen
        else:
            assert isinstance(conn, PgConnection)
            yield PgConnection(_CountingRaw(conn.raw, seen)), seen  # type: ignore[arg-type]


def test_a_batch_of_500_is_one_insert_and_a_replay_stores_nothing(db_path: Path) -> None:
    events = journal(1, 500)
    batch = parsed(events)
    with statements(db_path) as (conn, seen):
        ingest(conn, "k1", batch, RECEIVED)  # creates this month's partitions on PostgreSQL
        seen.clear()
        again = ingest(conn, "k1", parsed(journal(1, 500, epoch="f" * 32)), RECEIVED)
    inserts = [s for s in seen if s.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS")]
    assert len(inserts) == 1
    assert len(seen) <= 12  # a fixed handful per batch, not one per event
    assert (again.stored, again.acked_seq, again.chain_breaks) == (500, 500, ())
    replay = upload(db_path, events)
    assert (replay.stored, replay.duplicates, replay.acked_seq) == (0, 500, 500)
    overlap = upload(db_path, [*events[250:], *journal(501, 600, prev=events[-1]["hash"])])
    assert (overlap.stored, overlap.duplicates, overlap.acked_seq) == (100, 250, 600)
    assert overlap.chain_breaks == ()
    assert rows(
        db_path,
        "SELECT count(*), count(DISTINCT seq), min(chain_ok) FROM audit_events WHERE epoch = ?",
        ("e" * 32,),
    ) == [(600, 600, 1)]


def test_a_conflicting_version_from_another_month_is_kept_apart(db_path: Path) -> None:
    """On PostgreSQL the other month's partition would take it; it must not."""
    first = journal(1, 3)
    upload(db_path, first)
    changed = journal(1, 3, wall="2026-12-02T08:00:00+08:00", boot="boot-2")
    answer = upload(db_path, changed[1:2], received="2026-12-02T00:00:00+00:00")
    assert (answer.stored, answer.conflicts, answer.acked_seq) == (1, (2,), 3)
    assert rows(db_path, "SELECT seq, boot_id, wall_month FROM audit_events ORDER BY seq") == [
        (1, "boot-1", 202611),
        (2, "boot-1", 202611),
        (3, "boot-1", 202611),
    ]
    assert rows(db_path, "SELECT seq, boot_id FROM audit_conflicts") == [(2, "boot-2")]
    again = upload(db_path, changed[1:2], received="2026-12-02T00:00:01+00:00")
    assert (again.stored, again.duplicates) == (0, 1)


def partition_of(target: Path | str) -> dict[int, str]:
    return dict(rows(target, "SELECT seq, tableoid::regclass::text FROM audit_events ORDER BY seq"))


def test_events_land_in_the_partition_of_their_own_month(db_path: Path) -> None:
    walls = {
        1: "2026-11-23T08:00:00+08:00",
        2: "2026-12-31T23:59:59+08:00",  # ahead of the server's month: made ahead
        3: "2099-01-01T00:00:00+00:00",  # a clock far off: the default partition
        4: "1970-01-01T00:00:00+00:00",
        5: "2026-10-31T23:00:00-05:00",  # the kiosk's calendar, not UTC's
    }
    prev, events = GENESIS, []
    for seq, wall in walls.items():
        [event] = journal(seq, seq, prev=prev, wall=wall)
        events.append(event)
        prev = event["hash"]
    upload(db_path, events)
    assert rows(db_path, "SELECT seq, wall_month FROM audit_events ORDER BY seq") == [
        (1, 202611),
        (2, 202612),
        (3, 209901),
        (4, 197001),
        (5, 202610),
    ]
    if dialect_of_target(db_path) == "sqlite":
        return
    assert partition_of(db_path) == {
        1: "audit_events_p202611",
        2: "audit_events_p202612",
        3: "audit_events_default",
        4: "audit_events_default",
        5: "audit_events_p202610",
    }
    with connect(db_path) as conn:
        assert set(partitions.month_partitions(conn).values()) == {
            0,
            202610,
            202611,
            202612,
            202701,
        }
        assert partitions.create_month(conn, 209901)  # that month's turn came: carved out
        assert not partitions.create_month(conn, 209901)
    assert partition_of(db_path)[3] == "audit_events_p209901"
    assert partition_of(db_path)[4] == "audit_events_default"
    replay = upload(db_path, events)
    assert (replay.stored, replay.duplicates, replay.acked_seq) == (0, 5, 5)
    assert rows(db_path, "SELECT count(*) FROM audit_events") == [(5,)]


def dialect_of_target(target: Path | str) -> str:
    with connect(target) as conn:
        return dialect_of(conn)


def race(target: Path | str, uploads: Sequence[list[dict[str, Any]]]) -> list[IngestResult]:
    """Each upload on its own connection and thread, released together."""
    conns = [open_connection(target, check_same_thread=False) for _ in uploads]
    start = threading.Barrier(len(uploads))
    results: list[IngestResult | BaseException] = [RuntimeError("not run")] * len(uploads)

    def run(i: int) -> None:
        batch = parsed(uploads[i])
        start.wait()
        try:
            results[i] = ingest(conns[i], "k1", batch, RECEIVED)
        except BaseException as exc:  # reported below, in the test's thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(uploads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for conn in conns:
        conn.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, IngestResult)]


@pytest.mark.parametrize("round_", range(4))
def test_one_kiosk_uploading_twice_at_once_stores_each_event_once(
    db_path: Path, round_: int
) -> None:
    """Two server processes get the same kiosk's batch at once (a retry after a timeout),
    once as sent and once in a version from another month: one copy in audit_events, the
    other version in audit_conflicts, never both as events."""
    upload(db_path, journal(1, 1, epoch="warm" + "0" * 28))  # partitions exist already
    events = journal(1, 200)
    other = journal(1, 200, wall="2026-12-01T08:00:00+08:00", boot="boot-2")
    results = race(db_path, [events, events, other])
    assert sum(r.stored for r in results) == 400
    assert sum(r.duplicates for r in results) == 200
    assert {r.acked_seq for r in results} == {200}
    assert rows(
        db_path,
        "SELECT count(*), count(DISTINCT seq) FROM audit_events WHERE epoch = ?",
        ("e" * 32,),
    ) == [(200, 200)]
    assert rows(db_path, "SELECT count(*) FROM audit_conflicts") == [(200,)]
    [(boots,)] = rows(db_path, "SELECT count(DISTINCT boot_id) FROM audit_events WHERE seq > 1")
    assert boots == 1
