"""Guards' commands to a kiosk: remote gate open, configuration reload, speak test.

``POST /v1/guard/kiosks/{device_id}/gate {"reason"}`` and
``POST /v1/guard/kiosks/{device_id}/commands {"command"}`` answer
``{"delivered": true, "acked_at", "id"}`` once the kiosk has acknowledged (within
:data:`~server.commands.hub.ACK_TIMEOUT_S`). An admin, or a guard of the kiosk's site, may
ask: another site's kiosk is ``403``, an unknown one ``404``. A kiosk without a live socket
is ``409 offline`` (nothing is queued for later: the command would expire anyway); a kiosk
that does not acknowledge in time is ``504 not_acked`` (it may still act until the command
expires, 10 s after it was issued); a kiosk that acknowledges a failure (the relay would not
switch) is ``502 command_failed``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta

from server.accounts.principal import Principal, require_role, require_site
from server.appkeys import DIRECTORY
from server.commands.device_socket import PATH as SOCKET_PATH
from server.commands.device_socket import device_socket
from server.commands.hub import NotAcked, Offline
from server.commands.keys import HUB
from server.fleet.devices import Device
from server.http import views
from server.http.bodies import read_body, refuse_personal_numbers
from server.http.middleware import json_error
from server.http.operations import Operation


class GateRequest(msgspec.Struct):
    """Why the gate is opened by hand (kept in the kiosk's audit journal)."""

    reason: Annotated[str, Meta(min_length=1, max_length=200)]


class CommandRequest(msgspec.Struct):
    """A command without arguments."""

    command: Literal["config_reload", "speak_test"]


class CommandAnswer(msgspec.Struct):
    """The kiosk acknowledged the command at ``acked_at`` (server time, ISO 8601)."""

    delivered: bool
    acked_at: str
    id: str


async def _kiosk(request: web.Request, user: Principal) -> Device:
    """The addressed kiosk, if the caller may command it (404 unknown, 403 another site)."""
    state = await request.app[DIRECTORY].get(request.match_info["device_id"])
    if state is None:
        raise json_error(web.HTTPNotFound, "unknown_device", "no such kiosk")
    require_site(user, state.device.site)
    return state.device


async def _deliver(
    request: web.Request, device: Device, command: str, args: dict[str, Any], reason: str | None
) -> web.Response:
    hub = request.app.get(HUB)
    if hub is None:
        raise json_error(web.HTTPServiceUnavailable, "unavailable", "no command channel")
    try:
        ack = await hub.send(device, command, args, str(args["by"]), reason)
    except Offline:
        raise json_error(
            web.HTTPConflict,
            "offline",
            f"kiosk {device.device_id} has no live connection to the server: the command was"
            " not sent (check the kiosk's power and network)",
        ) from None
    except NotAcked:
        raise json_error(
            web.HTTPGatewayTimeout,
            "not_acked",
            "the command was sent but the kiosk did not acknowledge it in time; it may still"
            " act on it within 10 s of sending, never later",
        ) from None
    if not ack.ok:
        raise json_error(
            web.HTTPBadGateway, "command_failed", f"the kiosk could not do it: {ack.error}"
        )
    return views.json_response(msgspec.to_builtins(CommandAnswer(True, ack.acked_at, ack.id)))


async def open_gate(request: web.Request) -> web.Response:
    """``POST /v1/guard/kiosks/{device_id}/gate {"reason"}``: pulse the kiosk's gate relay."""
    user = require_role(request, "admin", "guard")
    device = await _kiosk(request, user)
    body = await read_body(request, GateRequest)
    refuse_personal_numbers(body.reason, "reason")
    reason = body.reason.strip()
    if not reason:
        raise json_error(web.HTTPBadRequest, "bad_request", "reason: must not be blank")
    args = {"reason": reason, "by": user.username}
    return await _deliver(request, device, "gate_open", args, reason)


async def send_command(request: web.Request) -> web.Response:
    """``POST /v1/guard/kiosks/{device_id}/commands {"command"}``: reload or speak test."""
    user = require_role(request, "admin", "guard")
    device = await _kiosk(request, user)
    body = await read_body(request, CommandRequest)
    return await _deliver(request, device, body.command, {"by": user.username}, None)


_ERRORS = (403, 404, 409, 502, 504)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        SOCKET_PATH,
        device_socket,
        "device",
        "The kiosk's command channel (WebSocket; server pings every 10 s)",
        errors=(400, 403),
        media_type="application/octet-stream",
    ),
    Operation(
        "POST",
        "/v1/guard/kiosks/{device_id}/gate",
        open_gate,
        "user",
        "Open a kiosk's gate by hand (admin or a guard of its site), with a reason",
        request=GateRequest,
        response=CommandAnswer,
        errors=_ERRORS,
    ),
    Operation(
        "POST",
        "/v1/guard/kiosks/{device_id}/commands",
        send_command,
        "user",
        "Tell a kiosk to reload its configuration or speak its test prompt",
        request=CommandRequest,
        response=CommandAnswer,
        errors=_ERRORS,
    ),
)
