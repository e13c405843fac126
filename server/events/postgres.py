"""Events across processes through PostgreSQL ``LISTEN``/``NOTIFY`` (channel ``siheyi_events``).

Each process holds two dedicated autocommit connections outside the pools: one listens
(``LISTEN siheyi_events``, then ``conn.notifies()``) and feeds the process's subscribers;
one sends. Publishing never waits: events are buffered and sent every :data:`FLUSH_S` as few
``pg_notify`` calls as fit, each payload a JSON array under :data:`MAX_PAYLOAD` bytes
(PostgreSQL refuses 8000 and more). A process's own events come back to it through
``LISTEN`` like everyone else's, so every subscriber sees one order.

When PostgreSQL restarts, both connections break: the listener reconnects with a backoff
doubling from :data:`RETRY_FIRST_S` to :data:`RETRY_MAX_S`; the sender drops what it held
(live views are best-effort; the facts are in the tables) and reconnects on its next batch.
Events published while PostgreSQL is down are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from server.events.bus import Event, EventBus, decode, encode_one

log = logging.getLogger(__name__)

CHANNEL = "siheyi_events"
#: Largest NOTIFY payload sent, in bytes (PostgreSQL's limit is 8000).
MAX_PAYLOAD = 7900
FLUSH_S = 0.05
#: Events held for sending at most; beyond, the oldest are dropped (PostgreSQL too slow).
MAX_BUFFER = 20_000
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


def batches(events: list[Event]) -> list[str]:
    """The events as JSON-array payloads, each under :data:`MAX_PAYLOAD` bytes (an event too
    big on its own is dropped). Each event is encoded once: a flush may hold thousands."""
    payloads: list[str] = []
    current: list[str] = []
    size = 2  # the brackets
    for event in events:
        piece = encode_one(event)
        length = len(piece.encode())
        if length + 2 > MAX_PAYLOAD:
            log.error("a %s event over %d bytes was not published", event.kind, MAX_PAYLOAD)
            continue
        if current and size + 1 + length > MAX_PAYLOAD:
            payloads.append("[" + ",".join(current) + "]")
            current, size = [], 2
        size += length + (1 if current else 0)
        current.append(piece)
    if current:
        payloads.append("[" + ",".join(current) + "]")
    return payloads


class PgEventBus(EventBus):
    """The event bus of a server on PostgreSQL."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._buffer: list[Event] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()
        self.reconnects = 0

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="events-listen"),
            asyncio.create_task(self._send_forever(), name="events-send"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await super().close()

    async def listening(self, timeout_s: float = 10.0) -> None:
        """Wait until ``LISTEN`` is in force (tests; a fresh process's first events)."""
        await asyncio.wait_for(self._listening.wait(), timeout_s)

    def _send(self, event: Event) -> None:
        self._buffer.append(event)
        if len(self._buffer) > MAX_BUFFER:
            del self._buffer[: len(self._buffer) - MAX_BUFFER]
        self._wake.set()

    async def _listen_forever(self) -> None:
        retry = RETRY_FIRST_S
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    retry = RETRY_FIRST_S
                    async for note in conn.notifies():
                        if self.subscribers:  # nobody watching here: nothing to decode
                            for event in decode(note.payload):
                                self.deliver(event)
            except psycopg.Error as exc:
                self._listening.clear()
                self.reconnects += 1
                log.warning("event listener lost PostgreSQL (%s); retrying in %.1f s", exc, retry)
                await asyncio.sleep(retry)
                retry = min(RETRY_MAX_S, retry * 2)

    async def _send_forever(self) -> None:
        conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        try:
            while True:
                await self._wake.wait()
                await asyncio.sleep(FLUSH_S)  # gather a batch
                self._wake.clear()
                events, self._buffer = self._buffer, []
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                    for payload in batches(events):
                        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                except psycopg.Error as exc:
                    log.warning(
                        "%d event(s) not sent: PostgreSQL unavailable (%s)", len(events), exc
                    )
                    if conn is not None:
                        with contextlib.suppress(psycopg.Error):
                            await conn.close()
                    conn = None
                    await asyncio.sleep(RETRY_FIRST_S)
        finally:
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
