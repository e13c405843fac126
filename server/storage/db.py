"""SQLite storage: connection setup, versioned migrations and an off-loop ``Database``.

All database work of the web server runs on one dedicated thread (``Database.run``) so the
event loop never blocks on disk. Command-line tools (importer, provisioning) use
:func:`open_connection` directly.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from server.errors import SchemaError

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_MIGRATION_HEADER = re.compile(r"^-- migration: (\d+)\s*$", re.MULTILINE)


def load_migrations() -> dict[int, list[str]]:
    """Parse ``schema.sql`` into ``{version: [statement, ...]}``."""
    text = resources.files("server.storage").joinpath("schema.sql").read_text(encoding="utf-8")
    parts = _MIGRATION_HEADER.split(text)
    migrations: dict[int, list[str]] = {}
    # parts = [preamble, "1", body1, "2", body2, ...]
    for number, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        statements = [s.strip() for s in "\n".join(lines).split(";")]
        migrations[int(number)] = [s for s in statements if s]
    return migrations


def schema_version(conn: sqlite3.Connection) -> int:
    """Return the applied schema version (0 for an empty database)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction; return the final version."""
    migrations = load_migrations()
    latest = max(migrations)
    current = schema_version(conn)
    if current > latest:
        raise SchemaError(f"database schema version {current} is newer than this code ({latest})")
    for version in range(current + 1, latest + 1):
        with transaction(conn):
            for statement in migrations[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        log.info("applied schema migration %d", version)
    return latest


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in one transaction: commit on success, roll back on any error."""
    conn.execute("BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_connection(path: str | Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``.

    WAL journal, ``synchronous=NORMAL`` by default (callers that need durability, such as
    audit ingestion, switch to FULL around their transaction), foreign keys on, and
    autocommit mode so transactions are explicit (:func:`transaction`).
    """
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=check_same_thread, timeout=10.0
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def connect(path: str | Path) -> Iterator[sqlite3.Connection]:
    """Context manager around :func:`open_connection` that always closes."""
    conn = open_connection(path)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def durable(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run a transaction with ``synchronous=FULL`` so its commit survives power loss."""
    conn.execute("PRAGMA synchronous=FULL")
    try:
        with transaction(conn):
            yield conn
    finally:
        conn.execute("PRAGMA synchronous=NORMAL")


class Database:
    """One SQLite connection owned by a single worker thread.

    ``await db.run(fn, *args)`` calls ``fn(connection, *args)`` on that thread, so calls are
    serialised and the event loop never waits on the disk.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Start the worker thread, open the connection and apply migrations."""
        if self._executor is not None:
            raise RuntimeError("database already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="siheyi-db")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(
                self._executor, partial(open_connection, self.path, check_same_thread=False)
            )
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise
        log.info("database %s open", self.path)

    async def run(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(connection, *args, **kwargs)`` on the database thread and return its result."""
        if self._executor is None or self._conn is None:
            raise RuntimeError("database is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, self._conn, *args, **kwargs))

    async def close(self) -> None:
        """Close the connection on its own thread and stop the worker."""
        executor, conn = self._executor, self._conn
        if executor is None:
            return
        self._executor = None
        self._conn = None
        loop = asyncio.get_running_loop()
        if conn is not None:
            await loop.run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)
        log.info("database %s closed", self.path)
