"""Audit retention (``prune``) and the conversion of migration 10, on both backends."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server.audit.ingestion import ingest
from server.audit.retention import PruneReport, default_cut, prune
from server.storage.connection import Connection, dialect_of
from server.storage.db import connect, load_migrations, migrate
from server.storage.postgres import connect_postgres
from tests.pgserver import PgCluster

from .test_audit import event_hash
from .test_audit_scale import journal, parsed, rows, upload

SEP = "2026-09-10T00:00:00+00:00"
OCT_EARLY = "2026-10-01T00:00:00+00:00"
OCT_LATE = "2026-10-20T00:00:00+00:00"
CUT = datetime(2026, 10, 15, tzinfo=UTC)


def pruned(target: Path | str, before: datetime, **kwargs: Any) -> PruneReport:
    with connect(target) as conn:
        return prune(conn, before, **kwargs)


def is_postgres(target: Path | str) -> bool:
    return str(target).startswith("postgresql://")


def loss_notice(seq: int, prev: str, wall: str) -> dict[str, Any]:
    """A kiosk's report that it dropped two events (an ``events_lost`` system event)."""
    [event] = journal(seq, seq, prev=prev, wall=wall)
    event.update(kind="system", outcome=None, detail={"event": "events_lost", "dropped": 2})
    event["hash"] = event_hash(event)
    return event


def test_prune_removes_only_what_was_received_before_the_cut(db_path: Path) -> None:
    sep = journal(1, 4, wall="2026-09-09T20:00:00+08:00")
    sep.append(loss_notice(5, sep[-1]["hash"], "2026-09-09T20:00:00+08:00"))
    upload(db_path, sep, received=SEP)
    changed = journal(2, 2, prev=sep[0]["hash"], wall="2026-09-09T20:00:00+08:00", boot="b2")
    upload(db_path, changed, received=SEP)  # a conflict, received in September
    octo = journal(6, 9, prev=sep[-1]["hash"], wall="2026-10-01T07:00:00+08:00")
    upload(db_path, octo[:2], received=OCT_EARLY)
    upload(db_path, octo[2:], received=OCT_LATE)
    report = pruned(db_path, CUT, batch_size=3)  # several batches per table
    assert (report.events, report.conflicts, report.losses) == (7, 1, 1)
    assert report.before == "2026-10-15T00:00:00+00:00"
    # PostgreSQL: September whole, the empty August, and the (empty) legacy partition
    expected = (
        ("audit_events_legacy", "audit_events_p202608", "audit_events_p202609")
        if is_postgres(db_path)
        else ()
    )
    assert report.partitions_dropped == expected
    assert rows(db_path, "SELECT seq, received_at FROM audit_events ORDER BY seq") == [
        (8, OCT_LATE),
        (9, OCT_LATE),
    ]
    assert rows(db_path, "SELECT count(*) FROM audit_conflicts") == [(0,)]
    assert rows(db_path, "SELECT count(*) FROM audit_losses") == [(0,)]
    assert rows(db_path, "SELECT acked_seq FROM audit_progress") == [(9,)]  # kept
    assert rows(db_path, "SELECT lost, conflicts FROM audit_device_state") == [(2, 1)]
    again = pruned(db_path, CUT)
    assert (again.events, again.conflicts, again.losses, again.partitions_dropped) == (
        0,
        0,
        0,
        (),
    )


def test_prune_never_takes_an_event_received_at_the_cut_or_after(db_path: Path) -> None:
    events = journal(1, 3, wall="2026-09-01T08:00:00+08:00")
    upload(db_path, events[:1], received="2026-10-14T23:59:59+00:00")
    upload(db_path, events[1:2], received="2026-10-15T00:00:00+00:00")
    upload(db_path, events[2:], received="2026-10-15T00:00:01+00:00")
    assert pruned(db_path, CUT + timedelta(microseconds=999_999)).events == 1
    assert rows(db_path, "SELECT seq FROM audit_events ORDER BY seq") == [(2,), (3,)]


def test_a_resend_after_pruning_is_acknowledged_and_the_chain_goes_on(db_path: Path) -> None:
    old = journal(1, 10, wall="2026-09-09T20:00:00+08:00")
    upload(db_path, old, received=SEP)
    pruned(db_path, CUT)
    assert rows(db_path, "SELECT count(*) FROM audit_events") == [(0,)]
    resend = upload(db_path, old, received=OCT_LATE)  # e.g. a kiosk restored from a backup
    assert (resend.stored, resend.duplicates, resend.acked_seq) == (0, 10, 10)
    assert resend.chain_breaks == ()
    assert rows(db_path, "SELECT count(*) FROM audit_events") == [(0,)]
    following = journal(11, 12, prev=old[-1]["hash"], wall="2026-10-20T08:00:00+08:00")
    answer = upload(db_path, following, received=OCT_LATE)
    assert (answer.stored, answer.acked_seq, answer.chain_breaks) == (2, 12, ())
    assert rows(db_path, "SELECT seq, chain_ok FROM audit_events ORDER BY seq") == [
        (11, 1),
        (12, 1),  # verified against the pruned tip's hash kept in audit_progress
    ]
    forged = journal(13, 13, prev="1" * 64, wall="2026-10-20T08:00:00+08:00", epoch="f" * 32)
    upload(db_path, journal(1, 12, epoch="f" * 32), received=SEP)
    pruned(db_path, CUT)
    assert upload(db_path, forged, received=OCT_LATE).chain_breaks == (13,)


def test_a_long_read_does_not_stop_a_prune(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: dropping a partition needs an exclusive lock a long read (an export) keeps
    from it; after the lock timeout the rows are deleted instead. SQLite: readers never
    block the writer."""
    from server.audit import retention

    upload(db_path, journal(1, 5, wall="2026-09-09T20:00:00+08:00"), received=SEP)
    monkeypatch.setattr(retention, "LOCK_TIMEOUT", "200ms")
    with connect(db_path) as reader:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 5
        report = pruned(db_path, CUT)
        reader.execute("ROLLBACK")
    assert (report.events, report.partitions_dropped) == (5, ())
    assert rows(db_path, "SELECT count(*) FROM audit_events") == [(0,)]


def test_the_configured_retention_gives_the_default_cut() -> None:
    now = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    assert default_cut(now, 0) is None  # keep for ever
    assert default_cut(now, 30) == datetime(2026, 10, 29, 9, 0, tzinfo=UTC)


def test_prune_wants_a_time_with_an_offset(db_path: Path) -> None:
    with pytest.raises(ValueError, match="offset"):
        pruned(db_path, datetime(2026, 10, 15))


# ------------------------------------------------------------------------ migration 10


@pytest.fixture
def unmigrated(request: pytest.FixtureRequest, db_path: Path | str, tmp_path: Path) -> Any:
    """An empty database of the backend under test, and a connection to it (no migration)."""
    if is_postgres(db_path):
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        conn: Connection = connect_postgres(cluster.new_database(migrated=False))
    else:
        conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    yield conn
    conn.close()


def test_migration_10_keeps_existing_events_and_their_idempotence(unmigrated: Any) -> None:
    conn: Connection = unmigrated
    migrations = load_migrations(dialect_of(conn))
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version in range(1, 10):
        for statement in migrations[version]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    old = journal(1, 3)
    for event in parsed(old):
        conn.execute(
            "INSERT INTO audit_events (device_id, epoch, seq, wall_time, received_at, kind,"
            " offline, boot_id, mono_ns, clock_trusted, detail, prev_hash, hash, chain_ok)"
            " VALUES ('k1', ?, ?, ?, ?, 'decision', 0, 'boot-1', ?, 1, ?, ?, ?, 1)",
            (event.epoch, event.seq, event.wall_time, SEP, event.mono_ns, event.detail_json,
             event.prev_hash, event.hash),
        )  # fmt: skip
    conn.execute("INSERT INTO audit_progress VALUES ('k1', ?, 3)", ("e" * 32,))
    assert migrate(conn) >= 10
    stored = "SELECT seq, wall_month FROM audit_events ORDER BY seq"
    assert [tuple(r) for r in conn.execute(stored)] == [(1, 0), (2, 0), (3, 0)]
    assert conn.execute("SELECT acked_hash FROM audit_progress").fetchone()[0] == old[-1]["hash"]
    if dialect_of(conn) == "postgresql":
        where = "SELECT DISTINCT tableoid::regclass::text FROM audit_events"
        assert [r[0] for r in conn.execute(where)] == ["audit_events_legacy"]
    replay = ingest(conn, "k1", parsed(old), OCT_LATE)
    assert (replay.stored, replay.duplicates, replay.acked_seq) == (0, 3, 3)
    more = ingest(conn, "k1", parsed(journal(4, 4, prev=old[-1]["hash"])), OCT_LATE)
    assert (more.stored, more.acked_seq, more.chain_breaks) == (1, 4, ())
    report = prune(conn, CUT)
    assert report.events == 3
    if dialect_of(conn) == "postgresql":
        assert "audit_events_legacy" in report.partitions_dropped
    assert [tuple(r) for r in conn.execute("SELECT seq FROM audit_events")] == [(4,)]


def test_kiosk_server_prune_cuts_at_before_or_the_configured_retention(
    db_path: Path | str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from siheyi.cli import main

    upload(db_path, journal(1, 2, wall="2026-09-09T20:00:00+08:00"), received=SEP)
    assert main(["server", "prune", "--database", str(db_path)]) == 2  # no cut at all
    assert "retention_days" in capsys.readouterr().err
    assert main(["server", "prune", "--before", "mid-october", "--database", str(db_path)]) == 2
    assert main(["server", "prune", "--before", "2026-09-01", "--database", str(db_path)]) == 0
    assert rows(db_path, "SELECT count(*) FROM audit_events") == [(2,)]
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\ndatabase = "{db_path}"\n[audit]\nretention_days = 30\n')
    capsys.readouterr()
    assert main(["server", "prune", "--config", str(config), "--json"]) == 0
    assert '"events": 2' in capsys.readouterr().out
    assert rows(db_path, "SELECT count(*) FROM audit_events") == [(0,)]
