"""server/http/proxies.py: X-Forwarded-* believed from trusted proxies only, on a real server.

The client of these tests connects from 127.0.0.1; trusting 127.0.0.1 (or not) makes it a
trusted proxy (or an ordinary client).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

import pytest
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest

from server.http.middleware import error_middleware
from server.http.proxies import CLIENT_ADDRESS, TrustedProxies, parse_address, proxy_middleware

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]


async def whoami(request: web.Request) -> web.Response:
    return web.json_response({"remote": request.remote, "scheme": request.scheme})


async def serve(aiohttp_client: ClientFactory, trusted: Sequence[str]) -> Client:
    app = web.Application(middlewares=[error_middleware, proxy_middleware(trusted)])
    app.router.add_get("/whoami", whoami)
    return await aiohttp_client(app)


async def ask(client: Client, headers: Any) -> dict[str, str]:
    resp = await client.get("/whoami", headers=headers)
    assert resp.status == 200, await resp.text()
    answer: dict[str, str] = await resp.json()
    return answer


async def test_trusted_peer_gives_client_and_scheme(aiohttp_client: ClientFactory) -> None:
    client = await serve(aiohttp_client, ["127.0.0.1"])
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    assert await ask(client, headers) == {"remote": "203.0.113.7", "scheme": "https"}


async def test_untrusted_peer_headers_are_ignored(aiohttp_client: ClientFactory) -> None:
    client = await serve(aiohttp_client, ["10.0.0.0/8", "::1"])
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    assert await ask(client, headers) == {"remote": "127.0.0.1", "scheme": "http"}


async def test_nothing_trusted_by_default(aiohttp_client: ClientFactory) -> None:
    client = await serve(aiohttp_client, [])
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    assert await ask(client, headers) == {"remote": "127.0.0.1", "scheme": "http"}


async def test_spoofed_left_entries_are_skipped(aiohttp_client: ClientFactory) -> None:
    """A client's own X-Forwarded-For is kept by the proxies, which append to it: only the
    right-most address not of a trusted proxy is the client."""
    client = await serve(aiohttp_client, ["127.0.0.0/8", "10.0.0.0/8"])
    headers = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 10.1.2.3"}
    assert (await ask(client, headers))["remote"] == "203.0.113.7"


async def test_several_headers_read_as_one_list(aiohttp_client: ClientFactory) -> None:
    client = await serve(aiohttp_client, ["127.0.0.1", "10.0.0.0/8"])
    headers = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "10.9.9.9")]
    assert (await ask(client, headers))["remote"] == "203.0.113.7"


async def test_all_trusted_means_leftmost(aiohttp_client: ClientFactory) -> None:
    client = await serve(aiohttp_client, ["127.0.0.1", "10.0.0.0/8"])
    headers = {"X-Forwarded-For": "10.0.0.5, 10.0.0.6"}
    assert (await ask(client, headers))["remote"] == "10.0.0.5"


async def test_ports_and_ipv6_forms(aiohttp_client: ClientFactory) -> None:
    client = await serve(aiohttp_client, ["127.0.0.1"])
    assert (await ask(client, {"X-Forwarded-For": "203.0.113.7:5555"}))["remote"] == "203.0.113.7"
    assert (await ask(client, {"X-Forwarded-For": "[2001:db8::1]:443"}))["remote"] == "2001:db8::1"
    assert (await ask(client, {"X-Forwarded-For": "2001:db8::2"}))["remote"] == "2001:db8::2"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "not-an-address"},
        {"X-Forwarded-For": "203.0.113.7, , 10.0.0.1"},
        {"X-Forwarded-For": ""},
        {"X-Forwarded-For": "[2001:db8::1"},
        {"X-Forwarded-For": "999.1.1.1"},
        {"X-Forwarded-Proto": "gopher"},
        {"X-Forwarded-Proto": ""},
    ],
)
async def test_malformed_headers_change_nothing(
    aiohttp_client: ClientFactory, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    client = await serve(aiohttp_client, ["127.0.0.1"])
    with caplog.at_level(logging.DEBUG, logger="server.http.proxies"):
        assert await ask(client, headers) == {"remote": "127.0.0.1", "scheme": "http"}
    assert any("ignored" in r.getMessage() for r in caplog.records)


async def test_malformed_for_keeps_a_good_proto(aiohttp_client: ClientFactory) -> None:
    client = await serve(aiohttp_client, ["127.0.0.1"])
    headers = {"X-Forwarded-For": "garbage", "X-Forwarded-Proto": "HTTPS"}
    assert await ask(client, headers) == {"remote": "127.0.0.1", "scheme": "https"}


def test_parse_address_forms() -> None:
    assert str(parse_address(" 192.0.2.1 ")) == "192.0.2.1"
    assert str(parse_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert parse_address("example.com") is None
    assert parse_address("") is None


def test_trusted_networks_by_family() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "fd00::/8"])
    assert parse_address("10.200.0.1") in proxies
    assert parse_address("fd12::1") in proxies
    assert parse_address("11.0.0.1") not in proxies
    assert None not in proxies


WHO = web.RequestKey("who", str)


class Seen(AbstractAccessLogger):
    """An access logger recording what it is shown: aiohttp hands it the original request."""

    lines: ClassVar[list[tuple[str | None, str | None, object]]] = []

    @property
    def enabled(self) -> bool:
        return True

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.lines.append((request.remote, request.get(CLIENT_ADDRESS), request.get(WHO)))


async def test_access_log_sees_client_and_what_inner_middlewares_stored() -> None:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[WHO] = "k-1"  # as auth_middleware stores the device
        return await handler(request)

    app = web.Application(
        middlewares=[error_middleware, proxy_middleware(["127.0.0.1"]), authenticate]
    )
    app.router.add_get("/whoami", whoami)
    Seen.lines.clear()
    server = TestServer(app)
    await server.start_server(access_log_class=Seen)
    async with TestClient(server) as client:
        answer = await ask(client, {"X-Forwarded-For": "203.0.113.7"})
    assert answer["remote"] == "203.0.113.7"
    assert Seen.lines == [("127.0.0.1", "203.0.113.7", "k-1")]


@pytest.mark.parametrize("trusted", [(), ("127.0.0.1",)])
async def test_the_server_sees_the_client_behind_a_configured_proxy_only(
    aiohttp_client: ClientFactory,
    db_path: Any,
    trusted: tuple[str, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from server.app import create_app
    from server.config import ServerConfig

    config = ServerConfig.default(database=db_path, trusted_proxies=trusted)
    client = await aiohttp_client(create_app(config))
    caplog.set_level(logging.WARNING, logger="server.fleet.admin")
    headers = {"X-Forwarded-For": "203.0.113.7"}
    body = {"username": "nobody", "password": "wrong-password"}
    resp = await client.post("/v1/admin/login", json=body, headers=headers)
    assert resp.status == 401
    expected = "203.0.113.7" if trusted else "127.0.0.1"
    assert f"from {expected}" in caplog.text
