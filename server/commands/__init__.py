"""The command channel to each kiosk (issue 12, part 3; docs/commands.md).

Each kiosk holds a WebSocket to the server (``GET /v1/device/ws``,
:mod:`server.commands.device_socket`), pinged so that a vanished kiosk is known gone within
seconds; guards send it signed commands through it (:mod:`server.commands.views`), and the
per-process :class:`~server.commands.hub.CommandHub` relays them over the event bus when the
socket is held by another process. Wiring: :func:`install` (the app factory calls it after
the event bus context) and :data:`OPERATIONS`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from server.alerts.hooks import observe_presence
from server.appkeys import CLOCK, DATABASE, DIRECTORY, SIGNING_KEY
from server.commands.hub import CommandHub, publisher
from server.commands.keys import HUB
from server.commands.views import OPERATIONS
from server.events import EVENTS

__all__ = ["HUB", "OPERATIONS", "close_links", "commands_ctx", "install"]


async def commands_ctx(app: web.Application) -> AsyncIterator[None]:
    """The hub for the app's lifetime, with its bus listener and link keeper."""
    hub = CommandHub(
        app[DATABASE],
        app[EVENTS],
        app[SIGNING_KEY],
        app[DIRECTORY],
        app[CLOCK],
        publisher(app),
        on_presence=lambda device, online: observe_presence(
            app, device.device_id, device.site, device.gate, online
        ),
    )
    app[HUB] = hub
    tasks = [
        asyncio.create_task(hub.listen(), name="commands-listen"),
        asyncio.create_task(hub.keep(), name="commands-keep"),
    ]
    try:
        yield
    finally:
        await hub.close_all()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def close_links(app: web.Application) -> None:
    """On shutdown, before aiohttp waits for handlers: close every kiosk socket."""
    hub = app.get(HUB)
    if hub is not None:
        await hub.close_all()


def install(app: web.Application) -> None:
    """Add the command channel's context and shutdown hook to ``app`` (after
    ``events_ctx``, which it needs)."""
    app.cleanup_ctx.append(commands_ctx)
    app.on_shutdown.append(close_links)
