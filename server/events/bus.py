"""The event bus interface and its in-process implementation.

A subscriber gets a bounded queue: a dashboard that stops reading loses its oldest events
(and is told how many, as a ``dropped`` event) instead of holding back the publisher, which
runs on the verify path and must never wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import msgspec

from core.idnumbers import find_clear_ids

log = logging.getLogger(__name__)

#: What is published: a kiosk seen (heartbeat) or gone quiet, its reported health, an audit
#: alert, a decided tap, a pass claimed at the server; guard alerts raised, cleared and
#: acknowledged (server/alerts); a command for a kiosk connected to another process and its
#: acknowledgement (server/commands); and ``dropped`` (a subscriber's queue overflowed).
EVENT_KINDS = (
    "kiosk_up",
    "kiosk_down",
    "kiosk_health",
    "alert",
    "alert_raised",
    "alert_cleared",
    "alert_acked",
    "tap",
    "pass_claimed",
    "command",
    "command_ack",
    "dropped",
)
#: Events waiting per subscriber; beyond this the oldest are dropped.
QUEUE_SIZE = 1000
#: Streams open at once per process (each holds a queue and a connection): 200 open boards
#: land unevenly on the workers, and each process's command hub holds one more.
MAX_SUBSCRIBERS = 256


class Event(msgspec.Struct, frozen=True):
    """One event: its kind, when (unix seconds, server clock) and its masked data."""

    kind: str
    at: float
    data: dict[str, Any]


class _Closed:
    """Put into a queue to end its subscription."""


_END = _Closed()


class Subscription:
    """One subscriber: an async iterator of events over a bounded queue, registered from
    the moment it is made (so nothing published after :meth:`EventBus.subscribe` returns is
    missed); use it as an async context manager, or :meth:`close` it."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Event | _Closed] = asyncio.Queue(QUEUE_SIZE)
        self.lost = 0
        self._ended = False
        self._pending: Event | None = None  # held back behind a "dropped" notice

    def put(self, item: Event | _Closed) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.lost += 1
        self.queue.put_nowait(item)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._pending is not None:
            held, self._pending = self._pending, None
            return held
        if self._ended:
            raise StopAsyncIteration
        item = await self.queue.get()
        if isinstance(item, _Closed):
            self._ended = True
            self.close()
            raise StopAsyncIteration
        if self.lost:
            lost, self.lost = self.lost, 0
            self._pending = item
            return Event("dropped", item.at, {"events": lost})
        return item

    def close(self) -> None:
        self._bus.unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """``publish`` an event; ``subscribe()`` to the events of every process of the server.

    This base class is the in-process fan-out every implementation delivers through; the
    PostgreSQL bus feeds it from ``LISTEN`` rather than from :meth:`publish` directly.
    """

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self.published = 0
        self.refused = 0  # events dropped for holding a clear ID number

    async def start(self) -> None:
        """Open what the bus needs (nothing in process)."""

    async def close(self) -> None:
        """Release it; open subscriptions end."""
        self.end_subscriptions()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Send an event to every subscriber of every process; never blocks, never raises."""
        event = self._checked(kind, data)
        if event is not None:
            self.published += 1
            self._send(event)

    def _send(self, event: Event) -> None:
        """Deliver a checked event (in process: at once)."""
        self.deliver(event)

    def _checked(self, kind: str, data: dict[str, Any]) -> Event | None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        if find_clear_ids(data):
            self.refused += 1
            log.error("a %s event holding a clear ID number was not published", kind)
            return None
        return Event(kind, round(time.time(), 3), data)

    def deliver(self, event: Event) -> None:
        """Hand ``event`` to this process's subscribers."""
        for sub in list(self._subs):
            sub.put(event)

    def end_subscriptions(self) -> None:
        """End every subscription (shutdown): their iterators stop."""
        for sub in list(self._subs):
            sub.put(_END)

    def subscribe(self) -> Subscription:
        """Events from now on, until the bus closes; ``RuntimeError`` beyond
        :data:`MAX_SUBSCRIBERS`."""
        if len(self._subs) >= MAX_SUBSCRIBERS:
            raise RuntimeError("too many event subscribers")
        sub = Subscription(self)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)


class LocalEventBus(EventBus):
    """In this process only (SQLite): publish delivers at once."""


def encode_one(event: Event) -> str:
    """One event as compact JSON text."""
    return json.dumps(msgspec.to_builtins(event), ensure_ascii=False, separators=(",", ":"))


def encode(events: list[Event]) -> str:
    """Events as one compact JSON array (a NOTIFY payload)."""
    return "[" + ",".join(encode_one(e) for e in events) + "]"


def decode(payload: str) -> list[Event]:
    """A NOTIFY payload back into events; anything malformed is skipped."""
    try:
        return msgspec.convert(json.loads(payload), list[Event])
    except (ValueError, msgspec.ValidationError):
        log.warning("malformed event payload ignored (%d bytes)", len(payload))
        return []
