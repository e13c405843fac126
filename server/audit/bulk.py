"""One statement for a whole batch of audit rows, on either backend.

``insert(conn, table, columns, rows)`` inserts the rows that are not stored yet and answers
the ``seq`` of those it stored (``ON CONFLICT DO NOTHING RETURNING seq``), so ingestion
tells new events from resends without a statement per event.

The statement differs by backend because the cheap form differs:

* SQLite: ``INSERT … VALUES (…), (…), …``: the 500 × 22 values of a full batch are
  within SQLite's limit on parameters (32,766); SQLite caches the statement per row count.
* PostgreSQL: ``INSERT … SELECT * FROM unnest(%b::text[], %b::bigint[], …)``: one array
  per column, sent in binary. A ``VALUES`` list of 11,000 placeholders is a query text
  psycopg re-parses on every call (it caches only short queries) — about 100 ms a batch,
  measured — while the unnest statement is short, cached, and its arrays cost the client
  a few microseconds a row. Its text bypasses ``?`` translation (``%b`` asks psycopg for
  binary parameters), so it runs on the raw psycopg connection.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from server.storage.connection import Connection
from server.storage.postgres import PgConnection

#: Most rows in one SQLite statement: 500 x 22 values stays below its 32,766 parameters.
SQLITE_ROWS = 500

#: PostgreSQL type of every audit column, for the unnest arrays.
PG_TYPES = {
    "device_id": "text",
    "epoch": "text",
    "seq": "bigint",
    "wall_time": "text",
    "received_at": "text",
    "kind": "text",
    "outcome": "text",
    "prompt": "text",
    "masked_id": "text",
    "pseudonym": "text",
    "offline": "integer",
    "cache_age_s": "double precision",
    "latency_ms": "double precision",
    "boot_id": "text",
    "mono_ns": "bigint",
    "clock_trusted": "integer",
    "detail": "text",
    "prev_hash": "text",
    "hash": "text",
    "chain_ok": "integer",
    "hash_ok": "integer",
    "flagged": "text",
    "wall_month": "integer",
}


def insert(conn: Connection, table: str, columns: str, rows: Sequence[tuple[Any, ...]]) -> set[int]:
    """Insert ``rows`` (values in ``columns`` order) unless stored; the seqs it stored."""
    if not rows:
        return set()
    if isinstance(conn, PgConnection):
        return _insert_pg(conn, table, columns, rows)
    stored: set[int] = set()
    for start in range(0, len(rows), SQLITE_ROWS):
        chunk = rows[start : start + SQLITE_ROWS]
        params = list(itertools.chain.from_iterable(chunk))
        cur = conn.execute(_values_sql(table, columns, len(chunk)), params)
        stored.update(int(r[0]) for r in cur.fetchall())
    return stored


@lru_cache(maxsize=4 * SQLITE_ROWS)
def _values_sql(table: str, columns: str, rows: int) -> str:
    """``INSERT`` of ``rows`` rows at once that skips stored ones and names those it stored.

    No conflict target: on PostgreSQL the unique key of ``audit_events`` includes the
    partition key (``wall_month``), on SQLite it does not; either way it is the only one.
    """
    one = "(" + ", ".join(["?"] * len(_names(columns))) + ")"
    values = ", ".join([one] * rows)
    return f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT DO NOTHING RETURNING seq"


def _insert_pg(
    conn: PgConnection, table: str, columns: str, rows: Sequence[tuple[Any, ...]]
) -> set[int]:
    names = _names(columns)
    transposed = zip(*rows, strict=True)
    arrays = [_column(PG_TYPES[n], values) for n, values in zip(names, transposed, strict=True)]
    cur = conn.raw.execute(_unnest_sql(table, columns), arrays)
    return {int(r[0]) for r in cur.fetchall()}


def _column(pg_type: str, values: tuple[Any, ...]) -> list[Any]:
    """One column as a list psycopg dumps as one array (binary dumpers want one type)."""
    if pg_type == "double precision":
        return [None if v is None else float(v) for v in values]
    return list(values)


@lru_cache(maxsize=8)
def _unnest_sql(table: str, columns: str) -> str:
    arrays = ", ".join(f"%b::{PG_TYPES[name]}[]" for name in _names(columns))
    return (
        f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays})"
        " ON CONFLICT DO NOTHING RETURNING seq"
    )


@lru_cache(maxsize=8)
def _names(columns: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in columns.split(","))
