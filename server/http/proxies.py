"""``X-Forwarded-For`` and ``X-Forwarded-Proto``, believed only from trusted reverse proxies.

Behind nginx every request's TCP peer is nginx: the login throttle, the logs and anything
else keyed on ``request.remote`` would see one client. :func:`proxy_middleware` restores the
real client, but only for requests whose TCP peer is in ``[server] trusted_proxies``: from
anyone else the headers are ignored, since a client may write whatever it likes in them.

The client is the right-most ``X-Forwarded-For`` address that is not itself a trusted proxy
(each proxy appends the peer it saw; entries left of the first untrusted one were written by
the client or by proxies we do not know, so cannot be believed), as nginx's
``real_ip_recursive on`` picks it. ``X-Forwarded-Proto``
(``http`` or ``https``, the last value when proxies chained) sets ``request.scheme``. A
malformed header changes nothing and is logged at debug level: it never fails the request.

The handler gets a clone of the request (``request.clone(remote=…, scheme=…)``). aiohttp's
access logger still holds the original, so what the inner middlewares store on the clone
(the authenticated device) is copied back onto it afterwards, and the client address is
kept on it under :data:`CLIENT_ADDRESS` for the access log to print instead of the proxy's.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = frozenset({"http", "https"})

#: Request key: the client address taken from ``X-Forwarded-For`` (set on the original request
#: and its clone when a trusted proxy named one).
CLIENT_ADDRESS = web.RequestKey("client_address", str)


def parse_address(text: str) -> Address | None:
    """The IP address of one ``X-Forwarded-For`` entry (``[v6]:port`` and ``v4:port`` too)."""
    text = text.strip()
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The configured networks; answers whether an address is one of them."""

    def __init__(self, trusted: Sequence[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted
        )

    def __contains__(self, address: Address | None) -> bool:
        return address is not None and any(
            address.version == net.version and address in net for net in self.networks
        )

    def client(self, forwarded_for: str) -> str | None:
        """The right-most untrusted address of the header (the left-most when every one is
        trusted: a request from inside); None when any entry is not an address."""
        addresses = [parse_address(entry) for entry in forwarded_for.split(",")]
        if not addresses or None in addresses:
            return None
        for address in reversed(addresses):
            if address not in self:
                return str(address)
        return str(addresses[0])


def _scheme(forwarded_proto: str) -> str | None:
    value = forwarded_proto.split(",")[-1].strip().lower()
    return value if value in _SCHEMES else None


def proxy_middleware(trusted: Sequence[str]) -> Middleware:
    """A middleware taking the client address and scheme from the headers of ``trusted``
    proxies (addresses or CIDR networks, as ``[server] trusted_proxies`` holds them)."""
    proxies = TrustedProxies(trusted)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not proxies.networks or parse_address(request.remote or "") not in proxies:
            return await handler(request)
        remote = scheme = None
        forwarded_for = request.headers.getall("X-Forwarded-For", [])
        if forwarded_for:
            remote = proxies.client(",".join(forwarded_for))
            if remote is None:
                log.debug("X-Forwarded-For ignored: %r", forwarded_for[:4])
        forwarded_proto = request.headers.get("X-Forwarded-Proto")
        if forwarded_proto is not None:
            scheme = _scheme(forwarded_proto)
            if scheme is None:
                log.debug("X-Forwarded-Proto ignored: %r", forwarded_proto[:40])
        if remote is None and scheme is None:
            return await handler(request)
        if remote is not None:
            request[CLIENT_ADDRESS] = remote
        clone = request.clone(
            remote=remote or request.remote or "", scheme=scheme or request.scheme
        )
        try:
            return await handler(clone)
        finally:
            request.update(clone)  # the device auth stored, for the access log

    return middleware
