"""The storage layer on both backends: placeholders, types, migrations under concurrency."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.storage.connection import describe, dialect_of, is_postgres
from server.storage.db import _statements, connect, load_migrations, transaction
from server.storage.postgres import translate
from tests.pgserver import PgCluster


def test_placeholders_are_translated_outside_quotes_only() -> None:
    assert translate("SELECT a FROM t WHERE b = ? AND c = '?'") == (
        "SELECT a FROM t WHERE b = %s AND c = '?'"
    )
    assert translate("SELECT 'it''s ?', ? LIKE 'x%'") == "SELECT 'it''s ?', %s LIKE 'x%'"
    assert translate("SELECT 5 % 2, ?") == "SELECT 5 %% 2, %s"


def test_a_statement_tagged_for_one_backend_runs_there_only() -> None:
    body = "CREATE TABLE a (x INT);\n-- only: postgresql\nCREATE INDEX b ON a (x);\n-- note; here\n"
    assert _statements(body) == [
        (None, "CREATE TABLE a (x INT)"),
        ("postgresql", "CREATE INDEX b ON a (x)"),
    ]
    sqlite, postgres = load_migrations("sqlite"), load_migrations("postgresql")
    assert sorted(sqlite) == sorted(postgres) == list(range(1, len(sqlite) + 1))
    assert any("DOUBLE PRECISION" in s for s in postgres[1])  # REAL keeps its precision


def test_url_passwords_never_reach_a_log() -> None:
    url = "postgresql://siheyi:s3cret@db.example:5433/fleet"
    assert is_postgres(url) and not is_postgres(Path("siheyi.db"))
    assert describe(url) == "postgresql://siheyi:***@db.example:5433/fleet"
    assert describe("siheyi.db") == "siheyi.db"


def test_booleans_and_sums_read_back_as_on_sqlite(db_path: Path | str) -> None:
    with connect(db_path) as conn, transaction(conn):
        conn.execute("CREATE TABLE flags (f INTEGER NOT NULL, n BIGINT NOT NULL)")
        conn.executemany("INSERT INTO flags VALUES (?, ?)", [(True, 2), (False, 3)])
        total, ones = conn.execute("SELECT SUM(n), SUM(f) FROM flags").fetchone()
    assert (total, ones) == (5, 1) and type(total) is int
    assert dialect_of(conn) == ("postgresql" if is_postgres(db_path) else "sqlite")


def test_a_failed_transaction_leaves_nothing(db_path: Path | str) -> None:
    with connect(db_path) as conn:
        with pytest.raises(RuntimeError), transaction(conn):
            conn.execute("INSERT INTO sites (site) VALUES (?)", ("half-done",))
            raise RuntimeError("crash in the middle")
        assert conn.execute("SELECT COUNT(*) FROM sites").fetchone()[0] == 0


_OPEN = "import sys; from server.storage.db import connect\nwith connect(sys.argv[1]): pass\n"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_starting_together_migrate_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Several server processes start at once on an empty database: each migration is
    applied exactly once and every process opens it."""
    if backend == "sqlite":
        target: Path | str = tmp_path / "fresh.db"
    else:
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        target = cluster.new_database(migrated=False)
    procs = [
        subprocess.Popen([sys.executable, "-c", _OPEN, str(target)], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    with connect(target) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
    assert sorted(versions) == sorted(load_migrations())
