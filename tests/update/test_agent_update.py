"""The agent's side of updates: the self-test tap against a real server, what "idle" means,
and the update report riding the heartbeat."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from device.acting.voice import MockPlayer
from device.deciding.verifier import Decision
from device.errors import ServerUnavailable
from device.runtime import built_agent
from device.sources.credentials import Credential
from device.update.selftest import judge
from device.update.state import new_record
from firmware_bridge.simserve import SimulatedReaderPort
from tests.e2e_support import (
    Fleet,
    _true,
    audit_rows,
    device_config,
    fleet,
    prompt_cache,
    sim,
    wait_for,
)

__all__ = ["fleet", "prompt_cache", "sim"]  # fixtures

RELAY = 17


async def test_the_self_test_tap_decides_through_the_server_and_moves_nothing(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    player, factory = MockPlayer(), MockFactory()
    config = device_config(tmp_path, sim, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=player, pin_factory=factory
    ) as agent:
        factory.pin(RELAY).clear_states()
        assert await agent.self_test() == ""
        assert player.played == []
        assert True not in [s.state for s in factory.pin(RELAY).states]

        async def journalled() -> bool:
            rows = await asyncio.to_thread(audit_rows, fleet.db)
            return any("update_self_test" in (r["detail"] or "") for r in rows)

        await wait_for(journalled)
    rows = [r for r in audit_rows(fleet.db) if "update_self_test" in (r["detail"] or "")]
    detail = json.loads(rows[0]["detail"])
    assert (detail["ok"], detail["offline"]) == (True, False)
    assert rows[0]["kind"] == "system" and not rows[0]["masked_id"]


def decision(outcome: str = "check", *reasons: str, offline: bool = False) -> Decision:
    return Decision("t", outcome, "p", offline, "", "", tuple(reasons), error="boom")


async def reachable() -> None:
    return None


async def unreachable() -> None:
    raise ServerUnavailable("down")


@pytest.mark.parametrize(
    ("made", "probe", "fails"),
    [
        (decision("check"), reachable, False),
        (decision("fault"), reachable, True),  # a fault is no decision
        (decision("check", "server_refused:bad_request"), reachable, True),
        (decision("check", "server_refused:revoked"), reachable, False),
        (decision("check", "server_unavailable", offline=True), unreachable, False),
        (decision("check", "server_unavailable", offline=True), reachable, True),
    ],
    ids=["online", "no-decision", "malformed", "revoked", "server-away", "cannot-talk"],
)
async def test_what_a_failed_self_test_is(made: Decision, probe: object, fails: bool) -> None:
    assert bool(await judge(made, probe)) is fails  # type: ignore[arg-type]


async def test_idle_means_no_tap_running_or_waiting_and_drain_stops_the_sources(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    config = device_config(tmp_path, sim, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=MockPlayer(), pin_factory=MockFactory()
    ) as agent:
        await wait_for(lambda: _true(agent._reader is not None and agent._reader.connected))
        done: asyncio.Queue[object] = asyncio.Queue()
        agent.add_listener(done.put_nowait)
        person = fleet.people["pass"][0]
        await agent.submit(Credential("id_card", person, time.monotonic()))
        assert agent.idle_for() is None  # queued
        await asyncio.wait_for(done.get(), 10)
        idle = agent.idle_for()
        assert idle is not None and idle >= 0
        await agent.drain()
        assert agent._reader is not None and not agent._reader.connected


async def test_the_heartbeat_reports_the_update_until_the_server_stored_the_final_state(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    config = device_config(tmp_path, sim, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=MockPlayer(), pin_factory=MockFactory()
    ) as agent:
        assert agent.updater is not None
        assert (await agent.status())["update"] is None
        agent.updater._record = new_record("2.0", "failed", "ab" * 32, "bad signature")
        status = await agent.status()
        assert status["update"]["state"] == "failed"
        await agent.heartbeat_once()  # the server stored it
        assert (await agent.status())["update"] is None
