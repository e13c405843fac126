"""Who may read ``/metrics``: loopback and ``[metrics] networks`` without a token; anyone
else with ``Authorization: Bearer`` and the ``[metrics] token`` (compared in constant time)
or an admin's or auditor's token.

The client address is ``request.remote`` after server/http/proxies.py: the real client when
a trusted proxy forwarded the request, the TCP peer otherwise. A request that carries
``X-Forwarded-For`` the proxy middleware did not believe (its peer is not a trusted proxy)
is treated as coming from outside: behind a reverse proxy on the same host that is not
listed in ``[server] trusted_proxies``, every request would otherwise look like loopback.
"""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

from server.accounts import users, websession
from server.appkeys import DATABASE
from server.fleet import sessions
from server.http.auth import bearer_token, unauthenticated
from server.http.middleware import json_error
from server.http.proxies import CLIENT_ADDRESS, Network, parse_address
from server.metrics.settings import MetricsSettings

LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
#: The roles whose own token opens /metrics (guards see their sites only, so they do not).
ROLES = frozenset({"admin", "auditor"})


class MetricsAccess:
    """The ``[metrics]`` rule, parsed once."""

    def __init__(self, settings: MetricsSettings) -> None:
        self.networks = LOOPBACK + tuple(
            ipaddress.ip_network(entry, strict=False) for entry in settings.networks
        )
        self._token = settings.token.encode()

    def open_to(self, request: web.Request) -> bool:
        """Whether the request's client may read without a token."""
        if "X-Forwarded-For" in request.headers and CLIENT_ADDRESS not in request:
            return False
        address = parse_address(request.remote or "")
        return address is not None and any(
            address.version == net.version and address in net for net in self.networks
        )

    def token_ok(self, token: str) -> bool:
        """Whether ``token`` is the configured metrics token (constant time)."""
        return bool(self._token) and hmac.compare_digest(token.encode(), self._token)

    async def check(self, request: web.Request) -> None:
        """Return when the request may read the metrics; else raise 401 or 403."""
        if self.open_to(request):
            return
        token = bearer_token(request)  # 401 without one
        if self.token_ok(token):
            return
        now = sessions.now_iso(sessions.utc_now())
        person = await request.app[DATABASE].run(
            users.principal_for_token, websession.token_hash(token), now, "bearer"
        )
        if person is None:
            raise unauthenticated("invalid metrics token")
        if person.role not in ROLES:
            raise json_error(web.HTTPForbidden, "forbidden", "this needs the role admin or auditor")
