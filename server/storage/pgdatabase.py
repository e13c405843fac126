"""The server's PostgreSQL handle: a blocking pool for storage functions, an asyncio pool for
the hot path, and fast failure while the database is away.

When PostgreSQL restarts, pooled connections break: the statement that finds one broken
raises :class:`~server.errors.StorageUnavailable` (a JSON ``503`` for the caller, whose kiosk
decides from its cache), the pool drops it, and later requests get fresh connections as soon
as the server is back. Nobody waits longer than
:data:`~server.storage.postgres.CONNECT_TIMEOUT_S` for a connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from server.errors import StorageUnavailable
from server.storage.connection import Connection, Dialect, describe
from server.storage.db import Database, migrate
from server.storage.postgres import CONNECT_TIMEOUT_S, PgConnection, configure, translate

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: Seconds ``open()`` waits for the first connections.
OPEN_TIMEOUT_S = 2 * CONNECT_TIMEOUT_S
#: What a lost or refused connection raises: turned into StorageUnavailable.
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


async def _configure_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """The hot-path pool's connections commit without waiting for the WAL flush.

    The only writes made through :meth:`PostgresDatabase.fetch` are tap-id claims
    (server/verify/claims.py): replay protection, not audit. With ``synchronous_commit =
    off`` a crash of PostgreSQL itself can lose the claims of its last fraction of a second
    (``wal_writer_delay``, 200 ms by default; never corruption, never a half-written claim),
    which only lets such a tap id be decided once more; every durable write (audit, devices,
    nonces) goes through :meth:`PostgresDatabase.run`, whose connections keep the server's
    setting. Why: each claim otherwise waits for its own WAL flush, and verify p50 on
    PostgreSQL was 6-9 ms against 3-4 ms on SQLite (bench/fleet_load.py).
    """
    configure(conn)
    await conn.execute("SET synchronous_commit = off")


class PostgresDatabase(Database):
    """``pool_size`` connections for :meth:`run` (one thread each) and as many for :meth:`fetch`."""

    dialect: Dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        super().__init__(url)
        self.pool_size = pool_size
        self._executor: ThreadPoolExecutor | None = None
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._apool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None

    async def open(self) -> None:
        """Open both pools and apply migrations (serialised across processes)."""
        if self._executor is not None:
            raise RuntimeError("database already open")
        common: dict[str, Any] = {
            # Every connection opened up front: growing under a burst opens them one at a
            # time while requests queue (PoolTimeout 503s at fleet start in bench/fleet_load).
            "min_size": self.pool_size,
            "max_size": self.pool_size,
            "kwargs": {"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT_S) + 2},
            "timeout": CONNECT_TIMEOUT_S,
            "open": False,
        }
        self._executor = ThreadPoolExecutor(self.pool_size, thread_name_prefix="siheyi-pg")
        self._pool = ConnectionPool(
            self.target,
            configure=configure,
            check=ConnectionPool.check_connection,
            **common,
        )
        self._apool = AsyncConnectionPool(
            self.target,
            configure=_configure_async,
            # No check on checkout: it costs a round trip per request (30 % of the hot path's
            # samples). A connection broken by a restart fails its statement (503) and the pool
            # discards it.
            **common,
        )
        try:
            loop = asyncio.get_running_loop()
            # Bounded: a database that is down at start-up is an error within seconds, and a
            # stop signal during start-up is not held up by a 30 s default.
            opening = partial(self._pool.open, wait=True, timeout=OPEN_TIMEOUT_S)
            await loop.run_in_executor(self._executor, opening)
            await self._apool.open(wait=True, timeout=OPEN_TIMEOUT_S)
            await self.run(migrate)
        except BaseException:
            await self.close()
            raise
        log.info("database %s open", describe(self.target))

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        assert self._pool is not None
        try:
            with self._pool.connection() as raw:
                return fn(PgConnection(raw), *args, **kwargs)
        except UNAVAILABLE as exc:
            raise StorageUnavailable(f"database unavailable: {type(exc).__name__}") from exc

    async def run(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(connection, *args, **kwargs)`` on a pool thread with a pooled connection."""
        if self._executor is None:
            raise RuntimeError("database is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._call, fn, args, kwargs))

    async def fetch(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        """All rows of one statement, on the asyncio pool (no thread hop)."""
        if self._apool is None:
            raise RuntimeError("database is not open")
        try:
            async with self._apool.connection() as conn:
                cur = await conn.execute(translate(sql), parameters)
                return await cur.fetchall()
        except UNAVAILABLE as exc:
            raise StorageUnavailable(f"database unavailable: {type(exc).__name__}") from exc

    async def close(self) -> None:
        """Close both pools and stop the threads."""
        executor, pool, apool = self._executor, self._pool, self._apool
        self._executor, self._pool, self._apool = None, None, None
        if apool is not None:
            await apool.close()
        if pool is not None and executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, pool.close)
        if executor is not None:
            # Its work is done (the pool closed on it); never block the loop on a straggler.
            executor.shutdown(wait=False, cancel_futures=True)
