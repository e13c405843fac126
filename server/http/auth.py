"""Request authentication: device session tokens on ``/v1/*``, admin tokens on ``/v1/admin/*``.

Devices send ``Authorization: Bearer <session token>`` (``POST /v1/session``, docs/identity.md).
Checking a token costs one HMAC and a dictionary lookup: no signature, no database read
(server/fleet/sessions.py). The device's status comes from the per-process cache, so revocation
and quarantine refuse the device's next request (at once when made through this process's
admin API, within ``[identity] status_sync_s`` otherwise), except ``POST /v1/audit``, which
stays open to them (their events are stored flagged), also with the audit-only token
``POST /v1/session`` hands such a kiosk; a key change (rotation, re-enrolment) ends its
sessions. Tap-id replays are refused by the verify handler once the body is valid
(server/http/views.py), so a refused body never burns its tap id.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from server.appkeys import ADMIN, DEVICE, DIRECTORY, TOKENS
from server.fleet import sessions
from server.fleet.admin import authenticate_admin
from server.fleet.devices import Device
from server.http.middleware import json_error

log = logging.getLogger(__name__)

_BEARER = re.compile(r"Bearer ([A-Za-z0-9_.~+/=-]{1,256})")
PROTECTED_PREFIX = "/v1/"
ADMIN_PREFIX = "/v1/admin/"
AUDIT_PATH = "/v1/audit"
#: Device endpoints that authenticate themselves (with a signature or an enrolment code).
OPEN_PATHS = frozenset(
    {"/v1/session/challenge", "/v1/session", "/v1/enrol", "/v1/admin/login", "/v1/openapi.json"}
)


def unauthenticated(detail: str, code: str = "unauthenticated") -> web.HTTPException:
    """A ``401`` JSON error with ``WWW-Authenticate: Bearer``."""
    return json_error(web.HTTPUnauthorized, code, detail, {"WWW-Authenticate": "Bearer"})


def bearer_token(request: web.Request) -> str:
    """The token of ``Authorization: Bearer …``, or a 401."""
    header = request.headers.get("Authorization")
    if header is None:
        raise unauthenticated("missing Authorization header")
    match = _BEARER.fullmatch(header.strip())
    if match is None:
        raise unauthenticated("expected 'Bearer <token>'")
    return match.group(1)


def refuse_status(status: str, device_id: str) -> None:
    """403 for a revoked or quarantined device."""
    if status == "revoked":
        log.info("revoked device %s refused", device_id)
        raise json_error(web.HTTPForbidden, "revoked", "this device has been revoked")
    if status == "quarantined":
        log.info("quarantined device %s refused", device_id)
        raise json_error(web.HTTPForbidden, "quarantined", "this device is quarantined")


async def authenticate(request: web.Request) -> Device:
    """Return the device the request's session token belongs to, or raise a 401/403."""
    claims = request.app[TOKENS].check(bearer_token(request))
    if claims is None:
        raise unauthenticated("invalid session token")
    if claims.expires <= sessions.utc_now().timestamp():
        raise unauthenticated("session expired: start a new one", "session_expired")
    state = await request.app[DIRECTORY].get(claims.device_id)
    if state is None:
        raise unauthenticated("unknown device")
    if not (request.path == AUDIT_PATH and request.method == "POST"):
        # A revoked or quarantined kiosk may still hand in what it saw: ingestion stores
        # those events flagged (issue 10, part 2). Nothing else is open to it, and an
        # audit-only token (what such a kiosk's session gets) opens nothing else either.
        refuse_status(state.status, claims.device_id)
        if claims.audit_only:
            raise unauthenticated(
                "this session hands in audit events only: start a new one", "session_expired"
            )
    if claims.epoch != state.key_epoch:
        raise unauthenticated("the device key changed: start a new session", "session_expired")
    return state.device


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate ``/v1/*``: admins under ``/v1/admin/``, devices elsewhere."""
    path = request.path
    if path.startswith(PROTECTED_PREFIX) and path not in OPEN_PATHS:
        if path.startswith(ADMIN_PREFIX):
            request[ADMIN] = await authenticate_admin(request, bearer_token(request))
        else:
            request[DEVICE] = await authenticate(request)
    return await handler(request)
