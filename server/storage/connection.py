"""What storage code may assume of a database connection, whichever backend is behind it.

Storage functions take a :class:`Connection` and write portable SQL with ``?`` placeholders.
On SQLite the connection is a plain :class:`sqlite3.Connection`; on PostgreSQL it is
:class:`server.storage.postgres.PgConnection`, which translates the placeholders. Code that
must differ by backend asks :func:`dialect_of`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

Dialect = Literal["sqlite", "postgresql"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class Cursor(Protocol):
    """The part of a DB-API cursor the storage code uses."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection the storage code uses (``?`` placeholders)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Cursor: ...

    def close(self) -> None: ...


def dialect_of(conn: Connection) -> Dialect:
    """Which backend ``conn`` talks to."""
    return "sqlite" if isinstance(conn, sqlite3.Connection) else "postgresql"


def is_postgres(target: object) -> bool:
    """Whether a database locator (a path or a URL) names a PostgreSQL database."""
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def describe(target: object) -> str:
    """The locator as it may be logged: a URL loses its password, a path stays a path."""
    text = str(target)
    if not is_postgres(text):
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
