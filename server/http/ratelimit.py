"""Overload protection: ``429 overloaded`` with ``Retry-After`` instead of a melting server.

Two mechanisms, chosen per route class:

* a **token bucket** for the expensive, bursty calls — session challenges and sessions (a
  signature check each; after an outage every kiosk re-authenticates at once) and enrolment;
  admin login has its own throttle per account and source (server/http/loginguard.py);
* an **in-flight limit** for everything else under ``/v1/``: device requests and admin requests
  each have a ceiling on concurrent handling, and each kiosk has its own share of the device
  ceiling (:func:`device_share_middleware`, after authentication), so one kiosk's token —
  say, thousands of requests whose bodies never arrive — cannot take every slot.

``Retry-After`` is whole seconds (at least 1); kiosks add their own jitter
(device/client.py). ``/healthz`` is never limited, nor the admin event stream (a few open
dashboards must not hold every admin slot; the bus caps them). Limits are per server process:
the bucket rates are the server's total divided by the number of workers
(server/http/workers.py), the in-flight ceilings bound each process's own memory and loop.
"""

from __future__ import annotations

import math

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from server.appkeys import DEVICE
from server.config import LimitSettings
from server.http.buckets import TokenBucket
from server.http.middleware import error_response

#: Paths outside the in-flight ceilings: logins are throttled per account and source by the
#: handler (loginguard); event streams are held for hours and capped per process by the bus;
#: a kiosk's command socket is held for hours too, one per kiosk (a new one replaces it).
UNCOUNTED = frozenset(
    {"/v1/admin/login", "/v1/login", "/v1/admin/events", "/v1/guard/events", "/v1/device/ws"}
)


def _classify(path: str) -> str:
    if path in ("/v1/session/challenge", "/v1/session"):
        return "session"
    if path == "/v1/enrol":
        return "enrol"
    if path in UNCOUNTED:
        return ""
    if path.startswith(("/v1/guard/", "/v1/audit/")):
        return "people"  # guards and auditors: their own ceiling, apart from kiosks and admins
    if path.startswith("/v1/admin/"):
        return "admin"
    if path.startswith("/v1/"):
        return "device"
    return ""


def overloaded(retry_after_s: float, what: str) -> web.Response:
    """The ``429`` answer."""
    seconds = max(1, math.ceil(retry_after_s))
    return error_response(
        429, "overloaded", f"too many {what} requests; retry later", {"Retry-After": str(seconds)}
    )


def ratelimit_middleware(limits: LimitSettings) -> Middleware:
    """A middleware enforcing ``limits`` (state lives in the closure, one per app)."""
    buckets = {
        "session": TokenBucket(limits.session_per_s, limits.session_burst),
        "enrol": TokenBucket(limits.enrol_per_s, max(1.0, limits.enrol_per_s * 2)),
    }
    ceilings = {
        "device": limits.device_inflight,
        "admin": limits.admin_inflight,
        "people": limits.people_inflight,
    }
    inflight = dict.fromkeys(ceilings, 0)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        kind = _classify(request.path)
        if not kind:
            return await handler(request)
        bucket = buckets.get(kind)
        if bucket is not None:
            wait = bucket.take()
            if wait > 0:
                return overloaded(wait, kind)
            return await handler(request)
        if inflight[kind] >= ceilings[kind]:
            return overloaded(1.0, kind)
        inflight[kind] += 1
        try:
            return await handler(request)
        finally:
            inflight[kind] -= 1

    return middleware


def device_share_middleware(limits: LimitSettings) -> Middleware:
    """At most ``device_inflight_each`` requests of one authenticated kiosk at once."""
    ceiling = limits.device_inflight_each
    inflight: dict[str, int] = {}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        device = request.get(DEVICE)
        if device is None or request.path == "/v1/device/ws":
            return await handler(request)
        device_id = device.device_id
        held = inflight.get(device_id, 0)
        if held >= ceiling:
            return overloaded(1.0, "of this kiosk's")
        inflight[device_id] = held + 1
        try:
            return await handler(request)
        finally:
            left = inflight[device_id] - 1
            if left:
                inflight[device_id] = left
            else:
                del inflight[device_id]

    return middleware
