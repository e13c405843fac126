"""The route table with its contract: each URL, its handler, who may call it and the typed
bodies it takes and gives.

One list of :class:`Operation` per handler module (``server.http.views.OPERATIONS``,
``server.fleet.device_views.OPERATIONS``, ``server.fleet.admin.OPERATIONS``); the app factory
registers them and the OpenAPI document is generated from the very same list, so the spec
cannot drift from what is served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: ``none``: anyone; ``device``: a kiosk's session token; ``admin``: an admin's bearer token;
#: ``user``: any person's bearer token or board session (the handler checks role and site).
Auth = Literal["none", "device", "admin", "user"]


@dataclass(frozen=True)
class Operation:
    """One method on one path, as served and as documented."""

    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    handler: Handler
    auth: Auth
    summary: str
    #: The body's type (a ``msgspec.Struct``), or None for no body.
    request: type | None = None
    #: The 200 answer's type, or None for a body that is not described by a model.
    response: type | None = None
    #: Error statuses the operation documents besides the ones every route can give.
    errors: Sequence[int] = field(default_factory=tuple)
    #: Query parameters: name → description.
    query: Sequence[tuple[str, str]] = field(default_factory=tuple)
    #: The 200 answer's media type (a stream, say, is not JSON).
    media_type: str = "application/json"

    def route(self) -> web.RouteDef:
        """The aiohttp route for this operation."""
        return web.route(self.method, self.path, self.handler)
