"""Storage: one schema and versioned migrations on SQLite or PostgreSQL, and the async
``Database`` the server runs them through.

A database locator is a SQLite file path or a ``postgresql://`` URL
(:func:`server.storage.connection.is_postgres`). Command-line tools (importer, provisioning)
use :func:`open_connection` / :func:`connect`; the web server opens a :class:`Database` with
:func:`open_database`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from server.errors import SchemaError
from server.storage.connection import Connection, Dialect, describe, dialect_of, is_postgres

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_MIGRATION_HEADER = re.compile(r"^-- migration: (\d+)\s*$", re.MULTILINE)
_ONLY = re.compile(r"^\s*-- only: (sqlite|postgresql)\s*$")
#: Advisory lock key that serialises migrations of several processes on PostgreSQL.
_MIGRATION_LOCK = "siheyi:migrate"


def _statements(body: str) -> list[tuple[str | None, str]]:
    """Split a migration body into ``(dialect or None, statement)``.

    A statement that contains the line ``-- only: sqlite`` (or ``postgresql``) runs only on
    that backend; every other comment line is dropped.
    """
    kept = [ln for ln in body.splitlines() if _ONLY.match(ln) or not ln.lstrip().startswith("--")]
    tagged: list[tuple[str | None, str]] = []
    for chunk in "\n".join(kept).split(";"):
        only: str | None = None
        lines = []
        for line in chunk.splitlines():
            match = _ONLY.match(line)
            if match:
                only = match.group(1)
            else:
                lines.append(line)
        statement = "\n".join(lines).strip()
        if statement:
            tagged.append((only, statement))
    return tagged


def load_migrations(dialect: Dialect = "sqlite") -> dict[int, list[str]]:
    """Parse the migration files into ``{version: [statement, ...]}`` for one backend.

    ``schema.sql`` holds migrations 1-7; each later one has a file of its own
    (``schema_NN_what.sql``), read in name order.
    """
    from server.storage.postgres import translate_ddl

    folder = resources.files("server.storage")
    names = sorted(f.name for f in folder.iterdir() if f.name.endswith(".sql"))
    migrations: dict[int, list[str]] = {}
    for name in names:
        parts = _MIGRATION_HEADER.split(folder.joinpath(name).read_text(encoding="utf-8"))
        # parts = [preamble, "1", body1, "2", body2, ...]
        for number, body in zip(parts[1::2], parts[2::2], strict=True):
            if int(number) in migrations:
                raise SchemaError(f"{name}: migration {number} is defined twice")
            statements = [s for only, s in _statements(body) if only in (None, dialect)]
            if dialect == "postgresql":
                statements = [translate_ddl(s) for s in statements]
            migrations[int(number)] = statements
    if sorted(migrations) != list(range(1, len(migrations) + 1)):
        raise SchemaError(f"migrations are not numbered 1..N: {sorted(migrations)}")
    return migrations


def schema_version(conn: Connection) -> int:
    """Return the applied schema version (0 for an empty database)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: Connection) -> int:
    """Apply pending migrations, each in its own transaction; return the final version.

    Safe when several server processes start at once: each migration runs under the
    database's write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock) and the
    version is read again inside it.
    """
    migrations = load_migrations(dialect_of(conn))
    latest = max(migrations)
    while True:
        with transaction(conn):
            lock(conn, _MIGRATION_LOCK)
            current = schema_version(conn)
            if current > latest:
                raise SchemaError(
                    f"database schema version {current} is newer than this code ({latest})"
                )
            if current == latest:
                return latest
            version = current + 1
            for statement in migrations[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        log.info("applied schema migration %d", version)


@contextmanager
def transaction(conn: Connection) -> Iterator[Connection]:
    """Run the block in one transaction: commit on success, roll back on any error.

    On SQLite the write lock is taken at ``BEGIN`` (``IMMEDIATE``), so a transaction that
    reads then writes never fails half-way with "database is locked" when another process
    writes too.
    """
    conn.execute("BEGIN IMMEDIATE" if dialect_of(conn) == "sqlite" else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def lock(conn: Connection, key: str) -> None:
    """Serialise the rest of this transaction with every other holder of ``key``.

    SQLite transactions are already serial (:func:`transaction` takes the write lock); on
    PostgreSQL this takes a transaction-scoped advisory lock.
    """
    if dialect_of(conn) == "postgresql":
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_lock_id(key),))


def _lock_id(key: str) -> int:
    """A stable signed 64-bit advisory-lock id for ``key``."""
    value = zlib.crc32(key.encode("utf-8")) | (zlib.adler32(key.encode("utf-8")) << 32)
    return value - (1 << 64) if value >= 1 << 63 else value


def open_connection(target: str | Path, *, check_same_thread: bool = True) -> Connection:
    """Open (creating if needed) and migrate the database a path or URL names."""
    if is_postgres(target):
        from server.storage.postgres import connect_postgres

        pg = connect_postgres(str(target))
        try:
            migrate(pg)
        except BaseException:
            pg.close()
            raise
        return pg
    return open_sqlite(target, check_same_thread=check_same_thread)


def open_sqlite(path: str | Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the SQLite file at ``path``.

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
def connect(target: str | Path) -> Iterator[Connection]:
    """Context manager around :func:`open_connection` that always closes."""
    conn = open_connection(target)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def durable(conn: Connection) -> Iterator[Connection]:
    """Run a transaction whose commit survives power loss.

    SQLite switches to ``synchronous=FULL`` for it; PostgreSQL commits are durable already.
    """
    if dialect_of(conn) == "postgresql":
        with transaction(conn):
            yield conn
        return
    conn.execute("PRAGMA synchronous=FULL")
    try:
        with transaction(conn):
            yield conn
    finally:
        conn.execute("PRAGMA synchronous=NORMAL")


class Database(ABC):
    """The server's asynchronous handle on its database, whichever backend.

    ``await db.run(fn, *args)`` calls ``fn(connection, *args)`` off the event loop, so storage
    functions stay plain functions shared with the command-line tools. ``await db.fetch(sql,
    params)`` is the hot path's read: no thread hop on SQLite, the asyncio driver on
    PostgreSQL.
    """

    dialect: Dialect

    def __init__(self, target: str | Path) -> None:
        self.target = str(target)

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply migrations."""

    @abstractmethod
    async def run(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(connection, *args, **kwargs)`` off the loop and return its result."""

    @abstractmethod
    async def fetch(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        """All rows of one statement. On PostgreSQL the pool is in autocommit, so a write
        (``INSERT … RETURNING``) commits at once: server/verify/claims.py relies on it."""

    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(connection, *args, **kwargs)`` in a durable transaction and return its
        result; ``fn`` must not open or end a transaction itself.

        This default gives each call a transaction of its own; :class:`SqliteDatabase` shares
        one among the writes queued meanwhile (group commit).
        """
        return await self.run(_durably, partial(fn, **kwargs), *args)

    @abstractmethod
    async def close(self) -> None:
        """Release every connection."""


def _durably(conn: Connection, fn: Callable[..., T], *args: Any) -> T:
    with durable(conn):
        return fn(conn, *args)


#: One queued :meth:`SqliteDatabase.write`: its call (taking the connection) and its answer.
_Write = tuple[Callable[[Connection], Any], "asyncio.Future[Any]"]


def run_group(conn: Connection, calls: list[Callable[[Connection], Any]]) -> list[Any]:
    """Run ``calls`` in one durable transaction, each in a savepoint of its own.

    A call that raises is rolled back alone (its exception is its answer); the others are
    committed together: one commit (one WAL sync) for the whole group.
    """
    answers: list[Any] = []
    with durable(conn):
        for call in calls:
            conn.execute("SAVEPOINT grouped_write")
            try:
                answers.append(call(conn))
            except Exception as exc:
                conn.execute("ROLLBACK TO SAVEPOINT grouped_write")
                answers.append(_Failed(exc))
            conn.execute("RELEASE SAVEPOINT grouped_write")
    return answers


class _Failed:
    """A grouped call's exception, told apart from a value it returned."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


def open_database(target: str | Path, *, pool_size: int = 10) -> Database:
    """The :class:`Database` for a path (SQLite) or a ``postgresql://`` URL (not yet open)."""
    if is_postgres(target):
        from server.storage.pgdatabase import PostgresDatabase

        return PostgresDatabase(str(target), pool_size=pool_size)
    return SqliteDatabase(target)


class SqliteDatabase(Database):
    """One writing SQLite connection owned by a worker thread, one reading on the loop.

    Writes are serialised on the thread, so the event loop never waits on a commit. Reads
    through :meth:`fetch` run inline: a point read of a page-cached file takes microseconds,
    less than the hop to a thread (``bench/verify_storage.py`` measured both).
    """

    dialect: Dialect = "sqlite"

    def __init__(self, target: str | Path) -> None:
        super().__init__(target)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._writes: list[_Write] = []
        self._writer: asyncio.Task[None] | None = None
        #: How many groups :meth:`write` committed, and how many calls they held.
        self.write_groups = 0
        self.grouped_writes = 0

    async def open(self) -> None:
        """Start the worker thread, open the connection and apply migrations."""
        if self._executor is not None:
            raise RuntimeError("database already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="siheyi-db")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(
                self._executor, partial(open_sqlite, self.target, check_same_thread=False)
            )
            self._reader = await loop.run_in_executor(self._executor, self._open_reader)
        except BaseException:
            await self.close()
            raise
        log.info("database %s open", describe(self.target))

    def _open_reader(self) -> sqlite3.Connection:
        reader = sqlite3.connect(self.target, isolation_level=None, check_same_thread=False)
        reader.execute("PRAGMA query_only=ON")
        # A reader waits for no lock in WAL mode; the timeout only covers a checkpoint's
        # brief exclusive moment.
        reader.execute("PRAGMA busy_timeout=100")
        return reader

    async def run(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(connection, *args, **kwargs)`` on the database thread and return its result."""
        if self._executor is None or self._conn is None:
            raise RuntimeError("database is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, self._conn, *args, **kwargs))

    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(connection, *args, **kwargs)`` in a durable transaction shared with the
        writes queued while the previous group ran (group commit).

        Why: a durable commit syncs the WAL, and with one writer thread every write queued
        behind its own commit. Measured with bench/fleet_load.py (SQLite x1, 800 kiosks, one
        audit upload per verify): the database thread spent about half its time in the
        ``COMMIT`` of single audit uploads and verify p99 reached 325 ms; one commit per
        group amortises the sync over every upload that arrived meanwhile.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._writes.append((lambda conn: fn(conn, *args, **kwargs), future))
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_groups())
        answer: T = await future
        return answer

    async def _write_groups(self) -> None:
        """Commit the queued writes, one group at a time, until none are left."""
        try:
            while self._writes:
                group, self._writes = self._writes, []
                try:
                    answers = await self.run(run_group, [call for call, _ in group])
                except Exception as exc:  # the transaction itself failed: every call did
                    answers = [_Failed(exc)] * len(group)
                self.write_groups += 1
                self.grouped_writes += len(group)
                for (_, future), answer in zip(group, answers, strict=True):
                    if future.done():
                        continue
                    if isinstance(answer, _Failed):
                        future.set_exception(answer.exc)
                    else:
                        future.set_result(answer)
        finally:
            self._writer = None

    async def fetch(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        """All rows of one read-only statement, read inline on the loop's own connection."""
        if self._reader is None:
            raise RuntimeError("database is not open")
        return self._reader.execute(sql, parameters).fetchall()

    async def close(self) -> None:
        """Close both connections on the worker thread and stop it."""
        if self._writer is not None:
            await asyncio.shield(self._writer)  # queued writes finish before the thread stops
        executor, conn, reader = self._executor, self._conn, self._reader
        if executor is None:
            return
        self._executor = self._conn = self._reader = None
        loop = asyncio.get_running_loop()
        for c in (reader, conn):
            if c is not None:
                await loop.run_in_executor(executor, c.close)
        executor.shutdown(wait=True)
        log.info("database %s closed", describe(self.target))
