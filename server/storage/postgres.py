"""PostgreSQL through psycopg 3: a ``?``-placeholder connection and the pools the server uses.

psycopg 3 was chosen over asyncpg because it has both a blocking and an asyncio API over one
type system: the storage functions shared with the command-line tools (importer,
provisioning) stay plain functions over a :class:`~server.storage.connection.Connection` on
both backends, while the verify hot path uses the asyncio pool with no thread hop.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.types.numeric import IntDumper, NumericLoader

#: Seconds a request waits for a pooled connection before failing (a JSON 503).
CONNECT_TIMEOUT_S = 3.0

_QUOTED = re.compile(r"('(?:[^']|'')*')")


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (and a literal ``%`` to ``%%``), outside quotes."""
    parts = _QUOTED.split(sql)
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("%", "%%").replace("?", "%s")
    return "".join(parts)


@lru_cache(maxsize=256)
def translate_ddl(sql: str) -> str:
    """A migration statement in PostgreSQL's terms: ``REAL`` is double precision there too."""
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)


class _BoolAsIntDumper(IntDumper):
    """Booleans are stored as 0/1 integers on both backends (the schema's convention)."""

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


class _IntOrFloatLoader(NumericLoader):
    """``SUM()`` of integers is ``numeric`` in PostgreSQL: answer int or float, as SQLite does."""

    def load(self, data: Any) -> Any:
        value = super().load(data)
        if value == value.to_integral_value():
            return int(value)
        return float(value)


def configure(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Type adaptation that makes PostgreSQL answer what SQLite answers."""
    adapters = conn.adapters
    adapters.register_dumper(bool, _BoolAsIntDumper)
    adapters.register_loader("numeric", _IntOrFloatLoader)


class PgConnection:
    """A blocking psycopg connection in autocommit mode that takes ``?`` placeholders.

    Transactions are explicit (``server.storage.db.transaction`` sends ``BEGIN``), exactly as
    on SQLite.
    """

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        """Run one statement."""
        return self.raw.execute(translate(sql), parameters)

    def executemany(
        self, sql: str, seq_of_parameters: Iterator[Sequence[Any]] | Sequence[Sequence[Any]], /
    ) -> psycopg.Cursor[Any]:
        """Run one statement for each parameter row (pipelined by psycopg)."""
        cur = self.raw.cursor()
        cur.executemany(translate(sql), seq_of_parameters)
        return cur

    def close(self) -> None:
        """Close the connection."""
        self.raw.close()


def connect_postgres(url: str) -> PgConnection:
    """Open one autocommit connection (command-line tools; the server uses pools)."""
    raw = psycopg.connect(url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S) + 2)
    configure(raw)
    return PgConnection(raw)
