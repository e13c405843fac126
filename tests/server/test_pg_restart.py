"""PostgreSQL stopped under a running server: fast JSON 503s, then recovery by itself.

Issue 11, part 6 (docs/deployment.md, "When PostgreSQL restarts"). The cluster here is this
module's own, so stopping it disturbs no other test in the same worker. While PostgreSQL is
down every device call that needs it answers ``503 {"error": "unavailable"}`` with
``Retry-After`` (the kiosk then decides from its cache and retries later), bounded by the
pools' connect timeout rather than hanging; once PostgreSQL is back the same app, never
restarted, answers 200 again: broken pooled connections are replaced on their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from core.audit import GENESIS_HASH, hash_event
from core.idnumbers import make_id_number
from device.config import VoiceConfig
from device.deciding.cache import KioskCache
from device.deciding.clock import ClockTrust
from device.deciding.verifier import Verifier
from device.link.client import ServerClient
from device.sources.credentials import Credential
from provisioning.registry import add_device
from server.app import create_app
from server.config import ServerConfig
from server.fleet.sessions import mint_token
from server.storage.db import connect
from server.storage.postgres import CONNECT_TIMEOUT_S
from server.verify.demodata import generate_people, load_demo_data, pick_demo_people
from siheyi.cli import local_fleet
from tests.pgserver import PgCluster

Client = TestClient[web.Request, web.Application]

#: A request while PostgreSQL is down must be answered within this (connect timeout + slack).
ANSWER_WITHIN_S = CONNECT_TIMEOUT_S + 2.0


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def url(own_cluster: PgCluster) -> str:
    return own_cluster.new_database()


@pytest.fixture
async def client(aiohttp_client: Any, url: str) -> Client:
    app = create_app(ServerConfig.default(database=url, pool_size=2))
    served: Client = await aiohttp_client(app)
    return served


@pytest.fixture
def auth(url: str) -> dict[str, str]:
    device = add_device(local_fleet(None, url), "SN-R1", "site-a", "gate-1", server_url="http://t")
    with connect(url) as conn:
        return {"Authorization": f"Bearer {mint_token(conn, device.device_id)}"}


def chain(first: int, last: int) -> list[dict[str, Any]]:
    """Journal events first..last, hash-chained as a kiosk writes them."""
    events, prev = [], GENESIS_HASH
    for seq in range(first, last + 1):
        event: dict[str, Any] = {
            "seq": seq,
            "wall_time": "2026-11-23T08:00:00+08:00",
            "mono_ns": seq,
            "boot_id": "boot-1",
            "clock_trusted": True,
            "kind": "system",
            "offline": False,
            "prev_hash": prev,
        }
        event["hash"] = prev = hash_event(event)
        events.append(event)
    return events


def person(n: int) -> str:
    """A valid ID number, different for each ``n`` (so no source cache answers for it)."""
    return make_id_number("110101", "19900307", f"{n:03d}")


class Calls:
    """The three device calls of a running kiosk, each with a fresh tap id or event."""

    def __init__(self, client: Client, auth: dict[str, str]) -> None:
        self.client = client
        self.auth = auth
        self.taps = 0
        self.events = chain(1, 200)
        self.sent = 0

    async def verify(self) -> tuple[int, Any, dict[str, str]]:
        self.taps += 1
        body = {
            "tap_id": f"t-{self.taps}",
            "credential": {"kind": "id_card", "id_number": person(self.taps)},
        }
        return await self._post("/v1/verify", body)

    async def heartbeat(self) -> tuple[int, Any, dict[str, str]]:
        return await self._post("/v1/heartbeat", {"boot_id": "boot-1", "uptime_s": 1.0})

    async def audit(self) -> tuple[int, Any, dict[str, str]]:
        batch = self.events[self.sent : self.sent + 1]
        status, answer, headers = await self._post("/v1/audit", {"events": batch})
        if status == 200:
            self.sent += 1
        return status, answer, headers

    async def _post(self, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        resp = await self.client.post(path, json=body, headers=self.auth)
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json(), dict(resp.headers)


async def all_ok(calls: Calls) -> None:
    for call in (calls.verify, calls.heartbeat, calls.audit):
        status, answer, _ = await call()
        assert status == 200, (call.__name__, answer)


async def test_requests_fail_fast_while_down_and_recover_without_restart(
    client: Client, auth: dict[str, str], own_cluster: PgCluster
) -> None:
    calls = Calls(client, auth)
    await all_ok(calls)
    await asyncio.to_thread(own_cluster.stop)
    try:
        for call in (calls.verify, calls.heartbeat, calls.audit, calls.verify):
            started = time.monotonic()
            status, answer, headers = await asyncio.wait_for(call(), ANSWER_WITHIN_S + 5)
            assert time.monotonic() - started < ANSWER_WITHIN_S, call.__name__
            assert status == 503, (call.__name__, status, answer)
            assert answer["error"] == "unavailable"
            assert int(headers["Retry-After"]) >= 1
    finally:
        await asyncio.to_thread(own_cluster.start_again)
    await recovered(calls)
    await all_ok(calls)


async def recovered(calls: Calls) -> None:
    """Retry as a kiosk does (Retry-After) until a verify passes again: the app reconnects."""
    for _ in range(20):
        status, _, headers = await calls.verify()
        if status == 200:
            return
        assert status == 503
        await asyncio.sleep(min(1.0, float(headers.get("Retry-After", "1"))))
    raise AssertionError("the server did not recover after PostgreSQL came back")


async def test_a_restart_between_requests_costs_at_most_a_503(
    client: Client, auth: dict[str, str], own_cluster: PgCluster
) -> None:
    """A quick restart (pooled connections all broken, the server back at once): the first
    request on a broken connection may get its 503, later ones succeed."""
    calls = Calls(client, auth)
    await all_ok(calls)
    await asyncio.to_thread(own_cluster.restart)
    await recovered(calls)
    await all_ok(calls)


async def test_kiosk_decides_from_its_cache_while_postgres_is_down(
    aiohttp_server: Any, url: str, own_cluster: PgCluster, tmp_path: Path
) -> None:
    """The device side: the real kiosk verifier, online against this server, caches a pass;
    with PostgreSQL down the server's 503 makes it decide the next tap from that cache."""
    now = datetime.now(UTC)
    await asyncio.to_thread(load_demo_data, url, 50, 7, now=now)
    [(_, number)] = pick_demo_people(generate_people(50, 7, now), now, {"pass": 1})
    server = await aiohttp_server(create_app(ServerConfig.default(database=url, pool_size=2)))
    device = add_device(local_fleet(None, url), "SN-K1", "site-a", "gate-1", server_url="http://t")
    with connect(url) as conn:
        token = mint_token(conn, device.device_id)
    cache = KioskCache(tmp_path / "cache.db", max_age_s=3600)
    kiosk = Verifier(
        ServerClient(str(server.make_url("")), token=token),
        VoiceConfig().prompt,
        bytes(32),
        ANSWER_WITHIN_S + 3,  # a deadline past the server's answer: the 503 decides, not it
        cache=cache,
        clock=ClockTrust(ntp_synced=lambda: True),
        site="site-a",
    )
    try:
        online = await kiosk.decide(card(number), "tap-1")
        assert (online.outcome, online.offline) == ("pass", False)
        await kiosk.flush()
        await asyncio.to_thread(own_cluster.stop)
        try:
            offline = await kiosk.decide(card(number), "tap-2")
        finally:
            await asyncio.to_thread(own_cluster.start_again)
    finally:
        await kiosk._client.close()
        await cache.close()
    assert (offline.outcome, offline.offline) == ("pass", True)
    assert "server_unavailable" in offline.reasons
    assert "503" in (offline.error or "")


def card(number: str) -> Credential:
    return Credential(kind="id_card", id_number=number, completed_at=time.monotonic())
