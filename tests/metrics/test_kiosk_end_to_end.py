"""A real agent's taps reach /metrics: its heartbeat carries its counters (device/counters.py
hooked into device/agent.py) and the server re-exports them per site."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from device.config import load_bundle
from firmware_bridge.simserve import SimulatedReaderPort
from provisioning.registry import add_device, write_bundle
from server.config import ServerConfig
from server.verify.demodata import generate_people, load_demo_data, pick_demo_people
from siheyi.cli import local_fleet
from tests.e2e_support import (
    NOW,
    PEOPLE,
    SEED,
    Fleet,
    prompt_cache,
    ready_agent,
    sim,
    tap,
    wait_for,
)

from .support import Samples, metrics_app, parse, value

__all__ = ["prompt_cache", "sim"]


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """tests/e2e_support.py's fleet, with /metrics served."""
    db = tmp_path / "server.db"
    await asyncio.to_thread(load_demo_data, db, PEOPLE, SEED, now=NOW)
    picked = pick_demo_people(
        generate_people(PEOPLE, SEED, NOW), NOW, {"pass": 2, "nat_expired": 1}
    )
    people: dict[str, list[str]] = {}
    for outcome, number in picked:
        people.setdefault(outcome, []).append(number)
    server = TestServer(metrics_app(ServerConfig.default(database=db)))
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    issued = add_device(local_fleet(None, db), "SN-METRICS-1", "site-m", server_url=url)
    write_bundle(issued, tmp_path / "bundle.json")
    try:
        yield Fleet(db, url, load_bundle(tmp_path / "bundle.json"), people)
    finally:
        await server.close()


async def _scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        assert resp.status == 200
        return parse(await resp.text())


async def test_taps_reach_the_site_totals(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    async with ready_agent(tmp_path, fleet, sim, prompt_cache) as agent:
        for outcome in ("pass", "pass", "nat_expired"):
            result = await tap(agent, sim, fleet.people[outcome][0])
            assert result.decision.outcome == outcome
        status = await agent.status()
        assert status["counters"]["taps"] == {"nat_expired": 1, "pass": 2}
        seen: Samples = {}

        async def reported() -> bool:
            nonlocal seen
            seen = await _scrape(fleet.url)
            return value(seen, "siheyi_kiosk_taps_total", site="site-m", outcome="pass") == 2

        await wait_for(reported)
    assert value(seen, "siheyi_kiosk_taps_total", site="site-m", outcome="nat_expired") == 1
    assert value(seen, "siheyi_kiosk_prompt_latency_seconds_count", site="site-m") == 3
    assert value(seen, "siheyi_kiosk_offline_decisions_total", site="site-m") == 0


async def _true(value: bool) -> bool:
    return value
