"""``GET /v1/admin/events``: the live event stream as server-sent events.

One ``data:`` line of JSON (``{"kind", "at", "data"}``) per event, and a ``: keep-alive``
comment every :data:`KEEPALIVE_S` so proxies and browsers keep the connection. The stream
ends when the server shuts down; a dashboard reconnects (``EventSource`` does by itself).
It does not count against the admin in-flight ceiling (server/http/ratelimit.py) — a few open
dashboards must not lock the admin API — but each process serves at most
:data:`server.events.bus.MAX_SUBSCRIBERS` streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import msgspec
from aiohttp import web

from server.events import EVENTS, Event
from server.http.middleware import json_error
from server.http.operations import Operation

KEEPALIVE_S = 15.0
#: Events between server processes only: a relayed command holds a signed order for a kiosk,
#: which no browser or script needs to see.
PRIVATE_KINDS = frozenset({"command"})
PATH = "/v1/admin/events"


async def serve_events(request: web.Request, keep: Callable[[Event], bool]) -> web.StreamResponse:
    """Stream the events ``keep`` accepts (never a :data:`PRIVATE_KINDS` one) until the
    server shuts down; shared by the admin stream and the guards' (server/board/live.py)."""
    bus = request.app.get(EVENTS)
    if bus is None:
        raise json_error(web.HTTPServiceUnavailable, "unavailable", "no event bus")
    try:
        sub = bus.subscribe()
    except RuntimeError as exc:
        raise json_error(web.HTTPServiceUnavailable, "overloaded", str(exc)) from exc
    async with sub:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(b": stream open\n\n")
        iterator = aiter(sub)
        while True:
            try:
                event = await asyncio.wait_for(anext(iterator), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            except StopAsyncIteration:
                break
            if event.kind not in PRIVATE_KINDS and keep(event):
                await response.write(b"data: " + msgspec.json.encode(event) + b"\n\n")
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
    return response


async def stream(request: web.Request) -> web.StreamResponse:
    """The events of every server process, as they happen."""
    return await serve_events(request, lambda event: True)


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        PATH,
        stream,
        "admin",
        "Live server events (server-sent events): kiosk up/down, alerts, taps, pass claims",
        media_type="text/event-stream",
    ),
)
