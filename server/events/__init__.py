"""Live server events for dashboards: kiosk up/down, alerts, taps — one interface.

``publish(app, kind, **data)`` hands an event to the app's :class:`~server.events.bus.EventBus`
(never waits, never raises: live views are best-effort, the facts themselves are in the
database); ``bus.subscribe()`` is an async iterator of the events every process of the server
published. ``GET /v1/admin/events`` streams them as server-sent events
(:mod:`server.events.views`).

Which bus (:func:`events_ctx`):

* **PostgreSQL**: :class:`~server.events.postgres.PgEventBus` — events cross processes through
  ``NOTIFY siheyi_events`` / ``LISTEN`` on a dedicated connection per process, batched into
  payloads under PostgreSQL's 8000-byte limit, reconnecting by itself after a restart.
* **SQLite**: :class:`~server.events.bus.LocalEventBus` — in this process only. With
  ``--workers N`` on SQLite a dashboard sees the events of the worker its stream landed on:
  SQLite has no notification channel, and polling an events table would add a write per tap
  to the one writer lock the verify path needs. Several processes that need a complete live
  view run on PostgreSQL (docs/server.md).

``kiosk_down`` is announced by one process for the fleet (:mod:`server.events.presence`).
Events carry masked ids only: an event holding anything that looks like a clear ID number
is dropped (and counted) rather than sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from server.appkeys import CONFIG
from server.events import presence
from server.events.bus import EVENT_KINDS, Event, EventBus, LocalEventBus
from server.storage.connection import is_postgres

__all__ = [
    "EVENTS",
    "EVENT_KINDS",
    "Event",
    "EventBus",
    "LocalEventBus",
    "end_streams",
    "events_ctx",
    "publish",
]

EVENTS = web.AppKey("events", EventBus)


def publish(app: web.Application, kind: str, /, **data: Any) -> None:
    """Publish an event if the app has a bus (apps built without one publish nothing)."""
    bus = app.get(EVENTS)
    if bus is not None:
        bus.publish(kind, data)


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    """The bus for the app's lifetime: PostgreSQL LISTEN/NOTIFY or in-process."""
    database = app[CONFIG].database
    bus: EventBus
    if is_postgres(database):
        from server.events.postgres import PgEventBus

        bus = PgEventBus(str(database))
    else:
        bus = LocalEventBus()
    await bus.start()
    app[EVENTS] = bus
    watcher = asyncio.create_task(presence.watch(app, publish), name="kiosk-presence")
    try:
        yield
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await bus.close()


async def end_streams(app: web.Application) -> None:
    """On shutdown, before aiohttp waits for handlers: end every open event stream."""
    bus = app.get(EVENTS)
    if bus is not None:
        bus.end_subscriptions()
