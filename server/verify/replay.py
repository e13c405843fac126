"""Tap-id replay memory: each kiosk's tap id is decided once, across every server process.

The ``tap_replay`` table (migration 8) is the memory all processes share: once a tap is
decided, the handler *claims* ``(device_id, tap_id)`` with one insert; the insert that finds
a live row is the replay (``409``), whichever process decided the first copy. Only decided
taps are claimed, so a body refused with ``400`` (or a crash) never burns its tap id, and of
two concurrent copies both are decided and the second claim is refused. A claim lives
``[identity] replay_ttl_s``; an expired row no longer counts (the claim takes it over) and
is purged in bounded batches by a background task, off the request path.

How a claim reaches the database, measured (``bench/verify_storage.py``):

* **SQLite**: claims queue on the loop and go to the database thread in batches, one
  transaction per batch (group commit). An inline autocommit insert costs a commit (a WAL
  append, now and then a checkpoint's fsync) on the event loop per request, and waits for the
  write lock of every other process on the file; one thread hop per claim costs more still.
  A batch costs the loop one hop however many claims it carries, and only the database
  thread ever waits on the busy timeout.
* **PostgreSQL**: one ``INSERT … RETURNING`` on the asyncio pool (no thread hop).

In front of the table, each process keeps the taps it saw decided last (:class:`RecentTaps`,
``[identity] replay_window`` of them): a kiosk's retry of a decided tap usually comes back to
the same process, and is refused there before any work. A replay of a tap decided by another
process is still refused, by the claim, after the lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from server.storage.connection import Connection
from server.storage.db import Database, transaction

log = logging.getLogger(__name__)

UnixClock = Callable[[], float]

#: Insert a claim, or take over an expired one; a live row makes it a no-op (rowcount 0).
CLAIM_SQL = (
    "INSERT INTO tap_replay (device_id, tap_id, expires_at) VALUES (?, ?, ?)"
    " ON CONFLICT (device_id, tap_id) DO UPDATE SET expires_at = excluded.expires_at"
    " WHERE tap_replay.expires_at <= ?"
)
#: Rows removed per purge statement: keeps each write transaction short.
PURGE_BATCH = 5000
#: Seconds between purges (each process purges; deleting expired rows is idempotent).
PURGE_EVERY_S = 30.0


def claim_taps(conn: Connection, taps: Sequence[tuple[str, str]], now: int, ttl: int) -> list[bool]:
    """Claim each ``(device_id, tap_id)`` in one transaction; True where it was free."""
    params = [(d, t, now + ttl, now) for d, t in taps]
    with transaction(conn):
        return [conn.execute(CLAIM_SQL, p).rowcount == 1 for p in params]


def purge_expired(conn: Connection, now: int, limit: int = PURGE_BATCH) -> int:
    """Delete at most ``limit`` expired claims; return how many went."""
    cur = conn.execute(
        "DELETE FROM tap_replay WHERE (device_id, tap_id) IN ("
        " SELECT device_id, tap_id FROM tap_replay WHERE expires_at <= ? LIMIT ?)",
        (now, limit),
    )
    return int(cur.rowcount)


class RecentTaps:
    """The last ``size`` taps this process saw decided, until they expire (O(1) each way)."""

    def __init__(self, size: int, clock: UnixClock = time.time) -> None:
        self.size = size
        self._clock = clock
        self._taps: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __contains__(self, tap: tuple[str, str]) -> bool:
        expires = self._taps.get(tap)
        if expires is None:
            return False
        if expires <= self._clock():
            del self._taps[tap]
            return False
        return True

    def add(self, tap: tuple[str, str], expires: float) -> None:
        self._taps[tap] = expires
        self._taps.move_to_end(tap)
        if len(self._taps) > self.size:
            self._taps.popitem(last=False)

    def __len__(self) -> int:
        return len(self._taps)


class TapReplay:
    """The replay check of ``POST /v1/verify``: :meth:`seen` before, :meth:`claim` after.

    ``ttl_s`` is how long a tap id stays refused; ``recent`` bounds the in-process front
    cache; ``clock`` gives unix seconds (tests move it).
    """

    def __init__(
        self,
        db: Database,
        *,
        ttl_s: float,
        recent: int,
        clock: UnixClock = time.time,
        purge_every_s: float = PURGE_EVERY_S,
    ) -> None:
        self._db = db
        self.ttl = int(ttl_s)
        self.recent = RecentTaps(recent, clock)
        self._clock = clock
        self._purge_every_s = purge_every_s
        self._queue: list[tuple[str, str, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        self.batches = 0

    def seen(self, device_id: str, tap_id: str) -> bool:
        """Whether this process saw the tap decided (a fast ``409``; nothing is recorded)."""
        return (device_id, tap_id) in self.recent

    async def claim(self, device_id: str, tap_id: str) -> bool:
        """Record a decided tap; False when it was decided before (by any process)."""
        if self._db.dialect == "sqlite":
            first = await self._queued(device_id, tap_id)
        else:
            now = int(self._clock())
            rows = await self._db.fetch(
                f"{CLAIM_SQL} RETURNING 1", (device_id, tap_id, now + self.ttl, now)
            )
            first = bool(rows)
        self.recent.add((device_id, tap_id), self._clock() + self.ttl)
        return first

    async def _queued(self, device_id: str, tap_id: str) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((device_id, tap_id, future))
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write())
        return await future

    async def _write(self) -> None:
        """Hand the queued claims to the database thread, one batch at a time, until none."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    taps = [(d, t) for d, t, _ in batch]
                    answers = await self._db.run(claim_taps, taps, int(self._clock()), self.ttl)
                except Exception as exc:
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.batches += 1
                for (*_, future), first in zip(batch, answers, strict=True):
                    if not future.done():
                        future.set_result(first)
        finally:
            self._writer = None

    async def purge(self, limit: int = PURGE_BATCH) -> int:
        """Delete expired claims, ``limit`` per transaction, until none are left."""
        total = 0
        while True:
            gone = await self._db.run(purge_expired, int(self._clock()), limit)
            total += gone
            if gone < limit:
                return total

    def start(self) -> None:
        """Start the periodic purge."""
        self._purger = asyncio.ensure_future(self._purge_forever())

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(self._purge_every_s)
            try:
                gone = await self.purge()
            except Exception as exc:  # the database away: try again next time
                log.warning("tap replay purge failed: %s: %s", type(exc).__name__, exc)
            else:
                if gone:
                    log.debug("tap replay: %d expired tap ids purged", gone)

    async def close(self) -> None:
        """Stop the purge and let queued claims finish."""
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        if self._writer is not None:
            await asyncio.shield(self._writer)
