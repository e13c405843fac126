"""Tap-id replay memory: each kiosk's tap id is decided once, across every server process.

The ``tap_replay`` table (migration 8) is the memory all processes share: once a tap is
decided, the handler *claims* ``(device_id, tap_id)`` with one insert; the insert that finds
a live row is the replay (``409``), whichever process decided the first copy. Only decided
taps are claimed, so a body refused with ``400`` (or a crash) never burns its tap id, and of
two concurrent copies both are decided and the second claim is refused. A claim lives
``[identity] replay_ttl_s``; an expired row no longer counts (the claim takes it over) and
is purged in bounded batches by a background task, off the request path.

How a claim reaches the database differs by backend (server/verify/claims.py): on SQLite
the claims of one loop turn are written inline in one transaction (the database thread takes
them when another writer holds the lock); on PostgreSQL the claims of one loop turn in one
``INSERT … RETURNING`` on the asyncio pool.

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

from server.storage.connection import Connection
from server.storage.db import Database
from server.verify.claims import (
    CLAIM_SQL,
    ClaimWriter,
    PostgresClaims,
    SqliteClaims,
    UnixClock,
    claim_taps,
)

__all__ = ["CLAIM_SQL", "RecentTaps", "TapReplay", "claim_taps", "purge_expired"]

log = logging.getLogger(__name__)

#: Rows removed per purge statement: keeps each write transaction short.
PURGE_BATCH = 5000
#: Seconds between purges (each process purges; deleting expired rows is idempotent).
PURGE_EVERY_S = 30.0


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
    cache; ``clock`` gives unix seconds (tests move it). On SQLite ``inline`` chooses the
    inline batches (default) or the database thread for every claim.
    """

    def __init__(
        self,
        db: Database,
        *,
        ttl_s: float,
        recent: int,
        clock: UnixClock = time.time,
        purge_every_s: float = PURGE_EVERY_S,
        inline: bool = True,
    ) -> None:
        self._db = db
        self.ttl = int(ttl_s)
        self.recent = RecentTaps(recent, clock)
        self._clock = clock
        self._purge_every_s = purge_every_s
        self.writer: ClaimWriter = (
            SqliteClaims(db, self.ttl, clock, inline=inline)
            if db.dialect == "sqlite"
            else PostgresClaims(db, self.ttl, clock)
        )
        self._purger: asyncio.Task[None] | None = None

    def seen(self, device_id: str, tap_id: str) -> bool:
        """Whether this process saw the tap decided (a fast ``409``; nothing is recorded)."""
        return (device_id, tap_id) in self.recent

    async def claim(self, device_id: str, tap_id: str) -> bool:
        """Record a decided tap; False when it was decided before (by any process)."""
        first = await self.writer.claim(device_id, tap_id)
        self.recent.add((device_id, tap_id), self._clock() + self.ttl)
        return first

    async def purge(self, limit: int = PURGE_BATCH) -> int:
        """Delete expired claims, ``limit`` per transaction, until none are left."""
        total = 0
        while True:
            gone = await self._db.run(purge_expired, int(self._clock()), limit)
            total += gone
            if gone < limit:
                return total

    def start(self) -> None:
        """Start the periodic purge (and, on SQLite, the claims' checkpoints)."""
        self._purger = asyncio.ensure_future(self._purge_forever())
        self.writer.start()

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
        await self.writer.close()
