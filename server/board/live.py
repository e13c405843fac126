"""``GET /v1/guard/events``: the live event stream, cut to the caller's sites.

The same server-sent events as ``GET /v1/admin/events`` (server/events/views.py): one
``data:`` line of JSON ``{"kind", "at", "data"}`` per event and a keep-alive comment every
:data:`~server.events.views.KEEPALIVE_S`. A guard gets only events whose ``data.site`` is
one of the assigned sites; an event naming no site is withheld from guards, except
``dropped`` (it tells the board to reload, and carries nothing but a count). Nobody gets
the internal ``command`` relay (a signed command on its way to the process holding the
kiosk's socket; the board sees ``command_ack``). The board's script opens the stream with
``EventSource``, which sends the session cookie by itself.
"""

from __future__ import annotations

from aiohttp import web

from server.accounts.principal import Principal, current_user, require_site
from server.events import Event
from server.events.views import PRIVATE_KINDS, serve_events
from server.http.operations import Operation

PATH = "/v1/guard/events"


def visible(user: Principal, event: Event, only: str | None = None) -> bool:
    """Whether ``user`` may see ``event`` (of site ``only``, when given)."""
    if event.kind in PRIVATE_KINDS:
        return False
    if event.kind == "dropped":
        return True
    site = event.data.get("site")
    if only is not None:
        return site == only
    return user.all_sites or (isinstance(site, str) and user.sees_site(site))


async def stream(request: web.Request) -> web.StreamResponse:
    """The events of the caller's sites, as they happen."""
    user = current_user(request)
    only = request.query.get("site") or None
    if only is not None:
        require_site(user, only)
    return await serve_events(request, lambda event: visible(user, event, only))


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        PATH,
        stream,
        "user",
        "Live events of the caller's sites (server-sent events): kiosk up/down/health, taps,"
        " alerts, command acknowledgements",
        media_type="text/event-stream",
        query=(("site", "only this site's events (a guard: one of the assigned sites)"),),
        errors=(403,),
    ),
)
