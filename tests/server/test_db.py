"""Schema migrations and the off-loop Database."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from server.errors import SchemaError
from server.storage.db import (
    connect,
    load_migrations,
    open_connection,
    open_database,
    schema_version,
)
from tests.pgserver import table_columns


def test_migrations_apply_once(db_path: Path) -> None:
    conn = open_connection(db_path)
    assert schema_version(conn) == max(load_migrations())
    conn.close()
    conn = open_connection(db_path)
    rows = conn.execute("SELECT version FROM schema_version").fetchall()
    assert rows == [(v,) for v in sorted(load_migrations())]
    if isinstance(db_path, Path):
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_newer_schema_refused(db_path: Path) -> None:
    open_connection(db_path).close()
    with connect(db_path) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (999)")
    conn.close()
    with pytest.raises(SchemaError, match="newer"):
        open_connection(db_path)


def test_audit_table_has_no_clear_id_column(db_path: Path) -> None:
    conn = open_connection(db_path)
    columns = table_columns(conn, "audit_events")
    conn.close()
    assert "id_number" not in columns
    assert {"masked_id", "pseudonym", "prev_hash", "hash", "chain_ok"} <= columns


async def test_database_runs_off_the_loop(db_path: Path) -> None:
    db = open_database(db_path)
    await db.open()
    try:

        def where(conn: sqlite3.Connection, x: int) -> tuple[str, int]:
            return threading.current_thread().name, conn.execute("SELECT ?", (x,)).fetchone()[0]

        thread, value = await db.run(where, 41)
        assert value == 41
        assert thread.startswith(("siheyi-db", "siheyi-pg"))
        assert thread != threading.current_thread().name
    finally:
        await db.close()
    with pytest.raises(RuntimeError, match="not open"):
        await db.run(where, 1)
