"""Overload protection: ``429 overloaded`` with ``Retry-After`` instead of a melting server.

Two mechanisms, chosen per route class:

* a **token bucket** for the expensive, bursty calls — session challenges and sessions (a
  signature check each; after an outage every kiosk re-authenticates at once), enrolment and
  admin login (argon2);
* an **in-flight limit** for everything else under ``/v1/``: device requests and admin requests
  each have a ceiling on concurrent handling.

``Retry-After`` is whole seconds (at least 1); kiosks add their own jitter
(device/client.py). ``/healthz`` is never limited. Limits are per server process.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from server.config import LimitSettings
from server.http.middleware import error_response


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take one token; 0.0 when granted, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def _classify(path: str) -> str:
    if path in ("/v1/session/challenge", "/v1/session"):
        return "session"
    if path == "/v1/enrol":
        return "enrol"
    if path == "/v1/admin/login":
        return "login"
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
        "login": TokenBucket(limits.login_per_s, max(1.0, limits.login_per_s * 2)),
    }
    ceilings = {"device": limits.device_inflight, "admin": limits.admin_inflight}
    inflight = {"device": 0, "admin": 0}

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
