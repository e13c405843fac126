"""Request authentication: device session tokens on ``/v1/*``; people (admins, guards,
auditors: server/accounts) on ``/v1/admin/*`` (admins only), ``/v1/guard/*``, the audit read
API under ``/v1/audit/`` and the board's pages under ``/board/``.

People send a bearer token (``POST /v1/login``) or, from the board, the session cookie; a
cookie-authenticated request that changes something must carry the session's CSRF token
(header ``X-CSRF-Token`` or form field ``csrf_token``), checked here so no route can forget.

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

from server.accounts import users, websession
from server.accounts.principal import USER, Principal, Via
from server.appkeys import ADMIN, DATABASE, DEVICE, DIRECTORY, TOKENS
from server.fleet import sessions
from server.fleet.devices import Device
from server.http.middleware import json_error

log = logging.getLogger(__name__)

_BEARER = re.compile(r"Bearer ([A-Za-z0-9_.~+/=-]{1,256})")
PROTECTED_PREFIX = "/v1/"
ADMIN_PREFIX = "/v1/admin/"
AUDIT_PATH = "/v1/audit"
#: Device endpoints that authenticate themselves (with a signature or an enrolment code).
OPEN_PATHS = frozenset(
    {
        "/v1/session/challenge",
        "/v1/session",
        "/v1/enrol",
        "/v1/admin/login",
        "/v1/login",
        "/v1/openapi.json",
    }
)
#: Paths for people (any role; the handler checks role and site).
PEOPLE_PREFIXES = ("/v1/guard/", "/v1/audit/")
BOARD_PREFIX = "/board"


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


async def person(request: web.Request, *, required: bool) -> Principal | None:
    """The person a bearer token or the board's session cookie belongs to."""
    token: str | None
    via: Via
    if "Authorization" in request.headers:
        token, via = bearer_token(request), "bearer"
    else:
        token, via = websession.session_cookie(request), "cookie"
    found = None
    if token is not None:
        now = sessions.now_iso(sessions.utc_now())
        found = await request.app[DATABASE].run(
            users.principal_for_token, websession.token_hash(token), now, via
        )
    if found is None:
        if required:
            raise unauthenticated("invalid or expired token: log in again")
        return None
    if via == "cookie":
        assert token is not None
        await _check_csrf(request, token)
    return found


async def _check_csrf(request: web.Request, session_token: str) -> None:
    """A cookie-authenticated change needs the session's CSRF token: a page on another site
    can make the browser send the cookie, but cannot read the token."""
    if request.method in websession.SAFE_METHODS:
        return
    offered = request.headers.get(websession.CSRF_HEADER)
    if offered is None and request.content_type == "application/x-www-form-urlencoded":
        offered = str((await request.post()).get(websession.CSRF_FIELD, "")) or None
    if not websession.csrf_ok(session_token, offered):
        log.warning("CSRF token missing or wrong on %s %s", request.method, request.path)
        raise json_error(web.HTTPForbidden, "csrf", "missing or wrong CSRF token: reload the page")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate people and devices by path (see the module docstring)."""
    path = request.path
    if path.startswith(BOARD_PREFIX):
        user = await person(request, required=False)
        if user is not None:
            request[USER] = user
    elif path.startswith(PROTECTED_PREFIX) and path not in OPEN_PATHS:
        if path.startswith(ADMIN_PREFIX):
            admin = await person(request, required=True)
            assert admin is not None
            if admin.role != "admin":
                raise json_error(web.HTTPForbidden, "forbidden", "this needs the role admin")
            request[USER] = admin
            request[ADMIN] = admin.username
        elif path.startswith(PEOPLE_PREFIXES):
            someone = await person(request, required=True)
            assert someone is not None
            request[USER] = someone
        else:
            request[DEVICE] = await authenticate(request)
    return await handler(request)
