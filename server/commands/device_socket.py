"""``GET /v1/device/ws``: each kiosk's persistent WebSocket, the way commands reach it.

The kiosk connects with its device session token (``Authorization: Bearer``, checked by the
auth middleware like any ``/v1/*`` device request). The server pings every :data:`PING_S`
(aiohttp ``heartbeat=``); a kiosk that does not answer a ping within half that is dropped, so
a kiosk that vanished without closing its socket is known gone within ``1.5 × PING_S`` = 15 s
(the issue asks for 30 s), and a closed socket at once. Messages are JSON text:
``{"type": "command", "signed": {...}}`` to the kiosk, ``{"type": "ack", "id", "ok",
"error"?}`` back (docs/commands.md).
"""

from __future__ import annotations

import json
import logging

from aiohttp import WSMsgType, web

from server.appkeys import DEVICE, TOKENS
from server.commands.hub import Link
from server.commands.keys import HUB
from server.http.auth import bearer_token
from server.http.middleware import json_error

log = logging.getLogger(__name__)

PATH = "/v1/device/ws"
PING_S = 10.0
#: A kiosk only ever sends small acknowledgements.
MAX_MESSAGE = 4096


async def device_socket(request: web.Request) -> web.StreamResponse:
    """Hold the kiosk's socket until it closes; acknowledgements go to the hub."""
    hub = request.app.get(HUB)
    if hub is None or hub.closing:
        raise json_error(web.HTTPServiceUnavailable, "unavailable", "no command channel here")
    claims = request.app[TOKENS].check(bearer_token(request))
    device = request[DEVICE]
    ws = web.WebSocketResponse(heartbeat=PING_S, max_msg_size=MAX_MESSAGE, autoping=True)
    if not ws.can_prepare(request).ok:
        raise json_error(
            web.HTTPBadRequest, "websocket_required", "a WebSocket endpoint: send Upgrade"
        )
    await ws.prepare(request)
    link = Link(device, ws, float(claims.expires) if claims is not None else 0.0)
    try:
        await hub.attach(link)
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(message.data)
            except ValueError:
                continue
            await hub.on_message(link, data)
    finally:
        await hub.detached(link)
    return ws
