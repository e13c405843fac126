"""How a decided tap's claim reaches ``tap_replay``, per backend (server/verify/replay.py).

* **PostgreSQL** (:class:`PostgresClaims`): the claims of one loop turn in one
  ``INSERT … SELECT FROM unnest(…) RETURNING`` on the asyncio pool, committed at once (the
  pool is in autocommit, without waiting for the WAL flush: server/storage/pgdatabase.py),
  no thread hop.
* **SQLite** (:class:`SqliteClaims`): claims made during one turn of the event loop are
  written together, inline, in one transaction on a connection of their own
  (group commit). Measured with ``bench/verify_storage.py`` and ``bench/verify_throughput.py``:
  an autocommit insert per claim pays a commit each; one thread hop per claim costs more
  than the insert, and a database thread busy with claims holds the GIL against the loop
  (the verify rate fell). The inline connection never waits for a lock: its busy timeout is
  0, and a batch that finds the write lock taken (another process, or this process's
  database thread writing) joins the writes queued on the database thread
  (``Database.write``'s group commit), which waits its full busy timeout there, off the
  loop. It never checkpoints either (a checkpoint syncs the file): the database thread runs
  a passive checkpoint every second instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from server.storage.connection import Connection
from server.storage.db import Database, transaction

log = logging.getLogger(__name__)

UnixClock = Callable[[], float]
Pending = list[tuple[str, str, "asyncio.Future[bool]"]]

#: Insert a claim, or take over an expired one; a live row makes it a no-op (rowcount 0).
CLAIM_SQL = (
    "INSERT INTO tap_replay (device_id, tap_id, expires_at) VALUES (?, ?, ?)"
    " ON CONFLICT (device_id, tap_id) DO UPDATE SET expires_at = excluded.expires_at"
    " WHERE tap_replay.expires_at <= ?"
)
#: Seconds between the passive WAL checkpoints of the inline claims (SQLite).
CHECKPOINT_EVERY_S = 1.0


def claim_rows(conn: Connection, taps: Sequence[tuple[str, str]], now: int, ttl: int) -> list[bool]:
    """Claim each ``(device_id, tap_id)`` in the caller's transaction; True where it was free."""
    return [conn.execute(CLAIM_SQL, (d, t, now + ttl, now)).rowcount == 1 for d, t in taps]


def claim_taps(conn: Connection, taps: Sequence[tuple[str, str]], now: int, ttl: int) -> list[bool]:
    """:func:`claim_rows` in one transaction of its own."""
    with transaction(conn):
        return claim_rows(conn, taps, now, ttl)


def checkpoint(conn: Connection) -> None:
    """Copy the WAL back into the database file without waiting for anyone (SQLite)."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class ClaimWriter(Protocol):
    """Claims decided taps in the database."""

    async def claim(self, device_id: str, tap_id: str) -> bool:
        """True when the tap was free (now claimed), False when a live claim exists."""
        ...

    def start(self) -> None:
        """Start background work, if any."""

    async def close(self) -> None:
        """Finish queued claims and stop."""


#: Claim a batch of distinct taps in one statement; the taps it returns were free.
BATCH_CLAIM_SQL = (
    "INSERT INTO tap_replay (device_id, tap_id, expires_at)"
    " SELECT d, t, ? FROM unnest(?::text[], ?::text[]) AS c(d, t)"
    " ON CONFLICT (device_id, tap_id) DO UPDATE SET expires_at = excluded.expires_at"
    " WHERE tap_replay.expires_at <= ? RETURNING device_id, tap_id"
)


class _PerLoopTurn:
    """Collects the claims made during one turn of the event loop for one write."""

    def __init__(self, db: Database, ttl: int, clock: UnixClock) -> None:
        self._db = db
        self._ttl = ttl
        self._clock = clock
        self._queue: Pending = []
        self._flush: asyncio.Handle | None = None
        self._writes: set[asyncio.Task[None]] = set()

    async def claim(self, device_id: str, tap_id: str) -> bool:
        """Whether this tap id was free (and is now taken), once its batch is written."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._queue.append((device_id, tap_id, future))
        if self._flush is None:
            self._flush = loop.call_soon(self._write_queued)
        return await future

    def _write_queued(self) -> None:
        raise NotImplementedError

    def _in_background(self, write: Coroutine[Any, Any, None]) -> None:
        """Run a batch's write as a task that :meth:`_drain` waits for."""
        task = asyncio.ensure_future(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _drain(self) -> None:
        """Write what is queued and wait for every write under way."""
        if self._flush is not None:
            self._flush.cancel()
            self._write_queued()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


class PostgresClaims(_PerLoopTurn):
    """The claims of one loop turn in one statement on the asyncio pool.

    One round trip per loop turn instead of one per claim (the pool's ten connections were
    each held for a round trip per verify). Taps go in sorted, so two processes' batches
    lock their rows in one order; a tap twice in one batch is claimed by its first copy.
    """

    def __init__(self, db: Database, ttl: int, clock: UnixClock) -> None:
        super().__init__(db, ttl, clock)
        self.batches = 0

    def _write_queued(self) -> None:
        self._flush = None
        batch, self._queue = self._queue, []
        self._in_background(self._write(batch))

    async def _write(self, batch: Pending) -> None:
        first: dict[tuple[str, str], int] = {}
        for i, (device_id, tap_id, _) in enumerate(batch):
            first.setdefault((device_id, tap_id), i)
        taps = sorted(first)
        now = int(self._clock())
        sql, params = _claim_statement(taps, now + self._ttl, now)
        try:
            rows = await self._db.fetch(sql, params)
        except Exception as exc:
            _fail(batch, exc)
            return
        self.batches += 1
        won = {(str(d), str(t)) for d, t in rows}
        _settle(batch, [(d, t) in won and first[(d, t)] == i for i, (d, t, _) in enumerate(batch)])

    def start(self) -> None:
        pass

    async def close(self) -> None:
        await self._drain()


def _claim_statement(
    taps: Sequence[tuple[str, str]], expires: int, now: int
) -> tuple[str, tuple[object, ...]]:
    """The statement claiming ``taps`` and its parameters: a lone tap (a quiet loop turn) as
    one plain insert, several through ``unnest``; both return the taps they claimed."""
    if len(taps) == 1:
        ((device_id, tap_id),) = taps
        return f"{CLAIM_SQL} RETURNING device_id, tap_id", (device_id, tap_id, expires, now)
    return BATCH_CLAIM_SQL, (expires, [d for d, _ in taps], [t for _, t in taps], now)


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _settle(batch: Pending, answers: Sequence[bool]) -> None:
    for (*_, future), first in zip(batch, answers, strict=True):
        if not future.done():
            future.set_result(first)


def _fail(batch: Pending, exc: BaseException) -> None:
    for *_, future in batch:
        if not future.done():
            future.set_exception(exc)


class SqliteClaims(_PerLoopTurn):
    """Claims batched per loop turn, written inline; to the database thread when locked.

    ``inline=False`` sends every batch to the database thread (the alternative measured).
    """

    def __init__(self, db: Database, ttl: int, clock: UnixClock, *, inline: bool = True) -> None:
        super().__init__(db, ttl, clock)
        self.inline = inline
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self.inline_batches = 0
        self.thread_batches = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._db.target, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=0")  # never wait on the loop: spill instead
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on the thread
            self._conn = conn
        return self._conn

    def _write_queued(self) -> None:
        """Write this turn's claims in one inline transaction, or spill them to the thread."""
        self._flush = None
        batch, self._queue = self._queue, []
        if not self.inline:
            self._spill(batch)
            return
        try:
            answers = claim_taps(self._connection(), [(d, t) for d, t, _ in batch], *self._now())
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                self._spill(batch)
            else:
                _fail(batch, exc)
            return
        except Exception as exc:
            _fail(batch, exc)
            return
        self.inline_batches += 1
        _settle(batch, answers)

    def _now(self) -> tuple[int, int]:
        return int(self._clock()), self._ttl

    def _spill(self, batch: Pending) -> None:
        self._in_background(self._write_on_thread(batch))

    async def _write_on_thread(self, batch: Pending) -> None:
        """Claim on the database thread, in the group commit of the writes queued there
        (:meth:`~server.storage.db.Database.write`), waiting out another writer's lock."""
        taps = [(d, t) for d, t, _ in batch]
        try:
            answers = await self._db.write(claim_rows, taps, *self._now())
        except Exception as exc:
            _fail(batch, exc)
            return
        self.thread_batches += 1
        _settle(batch, answers)

    def start(self) -> None:
        if self.inline:
            self._checkpointer = asyncio.ensure_future(self._checkpoint_forever())

    async def _checkpoint_forever(self) -> None:
        written = -1
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            if written == self.inline_batches:
                continue
            written = self.inline_batches
            try:
                await self._db.run(checkpoint)
            except Exception as exc:  # a checkpoint is only housekeeping
                log.debug("checkpoint after tap claims failed: %s", exc)

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
            self._checkpointer = None
        await self._drain()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
