"""Device authentication: ``Authorization: Bearer <device_id>.<secret>``.

Only SHA-256 of the secret is stored; comparison is constant time. The device row is read on
every request, so a revocation takes effect on the very next one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from server.appkeys import DATABASE, DEVICE
from server.devices import Device, find_device
from server.middleware import json_error

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"Bearer ([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{1,128})")
_DUMMY_HASH = hashlib.sha256(b"no such device").hexdigest()
PROTECTED_PREFIX = "/v1/"


def secret_sha256(secret: str) -> str:
    """The stored form of a device secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _unauthenticated(detail: str) -> web.HTTPException:
    return json_error(
        web.HTTPUnauthorized, "unauthenticated", detail, {"WWW-Authenticate": "Bearer"}
    )


async def authenticate(request: web.Request) -> Device:
    """Return the device the request authenticates as, or raise a 401/403 JSON error."""
    header = request.headers.get("Authorization")
    if header is None:
        raise _unauthenticated("missing Authorization header")
    match = _TOKEN.fullmatch(header.strip())
    if match is None:
        raise _unauthenticated("expected 'Bearer <device_id>.<secret>'")
    device_id, secret = match.groups()
    found = await request.app[DATABASE].run(find_device, device_id)
    expected = found.secret_sha256 if found is not None else _DUMMY_HASH
    secret_ok = hmac.compare_digest(secret_sha256(secret), expected)
    if found is None or not secret_ok:
        log.info("authentication failed for device id %s", device_id)
        raise _unauthenticated("unknown device or wrong secret")
    if found.device.status != "active":
        log.info("revoked device %s refused", device_id)
        raise json_error(web.HTTPForbidden, "revoked", "this device has been revoked")
    return found.device


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate every ``/v1/*`` request and attach the device (``request[DEVICE]``)."""
    if request.path.startswith(PROTECTED_PREFIX):
        request[DEVICE] = await authenticate(request)
    return await handler(request)
