"""Who may read /metrics: loopback and [metrics] networks without a token; anyone else with
the metrics token or an admin's or auditor's token; a forged X-Forwarded-For never helps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from server.config import ServerConfig
from server.metrics.access import MetricsAccess
from server.metrics.settings import MetricsSettings
from tests.server.users_support import add_user, bearer, token_for

from .support import metrics_app

TOKEN = "scrape-token-0123456789abcdef"
OUTSIDE = {"X-Forwarded-For": "203.0.113.9"}
MakeClient = Callable[[web.Application], Awaitable[TestClient]]


@pytest.fixture
def proxied(config: ServerConfig) -> ServerConfig:
    """The test client (127.0.0.1) is a trusted proxy: X-Forwarded-For names the client."""
    return replace(config, trusted_proxies=("127.0.0.1",))


async def _client(aiohttp_client: Any, config: ServerConfig, **settings: Any) -> TestClient:
    client: TestClient = await aiohttp_client(metrics_app(config, MetricsSettings(**settings)))
    return client


async def test_loopback_reads_without_a_token(aiohttp_client: Any, config: ServerConfig) -> None:
    client = await _client(aiohttp_client, config)
    resp = await client.get("/metrics")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "siheyi_metrics_database_up 1.0" in await resp.text()


async def test_outside_needs_a_token(aiohttp_client: Any, proxied: ServerConfig) -> None:
    client = await _client(aiohttp_client, proxied, token=TOKEN)
    resp = await client.get("/metrics", headers=OUTSIDE)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    resp = await client.get(
        "/metrics", headers={**OUTSIDE, "Authorization": "Bearer wrong-token-0000"}
    )
    assert resp.status == 401
    resp = await client.get("/metrics", headers={**OUTSIDE, "Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200
    assert "siheyi_metrics_database_up 1.0" in await resp.text()


async def test_no_token_configured_refuses_an_empty_one(
    aiohttp_client: Any, proxied: ServerConfig
) -> None:
    client = await _client(aiohttp_client, proxied)
    resp = await client.get("/metrics", headers={**OUTSIDE, "Authorization": "Bearer "})
    assert resp.status == 401


async def test_configured_network_reads_without_a_token(
    aiohttp_client: Any, proxied: ServerConfig
) -> None:
    client = await _client(aiohttp_client, proxied, networks=["203.0.113.0/24"])
    assert (await client.get("/metrics", headers=OUTSIDE)).status == 200
    other = {"X-Forwarded-For": "198.51.100.1"}
    assert (await client.get("/metrics", headers=other)).status == 401


async def test_a_forged_forwarded_for_from_an_untrusted_peer_does_not_pass(
    aiohttp_client: Any, config: ServerConfig
) -> None:
    """The peer is not a trusted proxy: its X-Forwarded-For is not believed, and a request
    carrying one is not taken for a local one either (a same-host proxy not listed)."""
    client = await _client(aiohttp_client, config)
    resp = await client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert resp.status == 401


async def test_a_trusted_proxy_cannot_be_talked_past(
    aiohttp_client: Any, proxied: ServerConfig
) -> None:
    """The client writes 127.0.0.1 left of itself: the right-most untrusted address counts."""
    client = await _client(aiohttp_client, proxied)
    resp = await client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1, 203.0.113.9"})
    assert resp.status == 401


def _peer(address: str, headers: dict[str, str] | None = None) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (
        (address, 40000) if key == "peername" else default
    )
    return make_mocked_request("GET", "/metrics", headers=headers or {}, transport=transport)


def test_peers_by_network() -> None:
    access = MetricsAccess(MetricsSettings(networks=["10.1.0.0/16", "2001:db8::/32"]))
    assert access.open_to(_peer("127.0.0.1"))
    assert access.open_to(_peer("::1"))
    assert access.open_to(_peer("10.1.2.3"))
    assert access.open_to(_peer("2001:db8::5"))
    assert not access.open_to(_peer("10.2.0.1"))
    assert not access.open_to(_peer("198.51.100.7", {"X-Forwarded-For": "127.0.0.1"}))
    assert not access.open_to(_peer("127.0.0.1", {"X-Forwarded-For": "10.1.2.3"}))


def test_token_comparison() -> None:
    assert MetricsAccess(MetricsSettings(token=TOKEN)).token_ok(TOKEN)
    assert not MetricsAccess(MetricsSettings(token=TOKEN)).token_ok(TOKEN + "x")
    assert not MetricsAccess(MetricsSettings()).token_ok("")


def test_the_token_is_not_in_the_repr() -> None:
    assert TOKEN not in repr(MetricsSettings(token=TOKEN))
    assert "10.0.0.0/8" in repr(MetricsSettings(networks=["10.0.0.0/8"]))


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(msgspec.ValidationError, match="networks"):
        msgspec.convert({"networks": ["10.0.0.0/33"]}, MetricsSettings)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"token": "short"}, MetricsSettings)


@pytest.mark.parametrize(("role", "status"), [("admin", 200), ("auditor", 200), ("guard", 403)])
async def test_people_tokens(
    aiohttp_client: Any, proxied: ServerConfig, db_path: Path, role: str, status: int
) -> None:
    client = await _client(aiohttp_client, proxied)
    add_user(db_path, "someone", role, ["site-a"] if role == "guard" else [])
    token = await token_for(client, "someone")
    resp = await client.get("/metrics", headers={**OUTSIDE, **bearer(token)})
    assert resp.status == status, await resp.text()
