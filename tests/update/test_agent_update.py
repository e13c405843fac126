"""The agent's side of updates: the self-test tap against a real server, what "idle" means,
and the update report riding the heartbeat."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import cast

import pytest
from gpiozero.pins.mock import MockFactory

from device import runtime
from device.acting.voice import MockPlayer
from device.deciding.verifier import Decision, Verifier
from device.errors import ServerUnavailable
from device.runtime import _connect_updater, built_agent
from device.sources.credentials import Credential
from device.update.selftest import judge, self_test_tap
from device.update.settings import UpdateSettings
from device.update.state import new_record
from device.update.updater import Updater
from firmware_bridge.simserve import SimulatedReaderPort
from tests.e2e_support import (
    Fleet,
    _true,
    audit_rows,
    card,
    device_config,
    fleet,
    prompt_cache,
    reader_ready,
    ready_agent,
    sim,
    wait_for,
)
from tests.update.fakes import (
    KEY_HEX,
    FakeBuilder,
    FakeSource,
    install_first,
    offer_for,
    running,
    wheel_bytes,
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
    async with ready_agent(tmp_path, fleet, sim, prompt_cache) as agent:
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


async def test_an_offer_during_a_real_tap_switches_only_after_the_tap_has_ended(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    root = tmp_path / "opt"
    install_first(root, "1.0")
    config = device_config(tmp_path, sim, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=MockPlayer(), pin_factory=MockFactory()
    ) as agent:
        settings = UpdateSettings(
            release_key=KEY_HEX, root=str(root), state_dir=str(tmp_path / "var"), idle_s=0.0
        )
        up = Updater(
            settings,
            FakeSource(wheel_bytes("2.0")),
            running_version="1.0",
            builder=FakeBuilder(),
            poll_s=0.01,
        )
        agent.updater = up
        _connect_updater(agent, agent._client)
        task = asyncio.create_task(up.run())
        await reader_ready(agent)
        in_tap, end_tap = asyncio.Event(), asyncio.Event()

        async def hold(result: object) -> None:  # the tap is not over until this returns
            in_tap.set()
            await end_tap.wait()

        agent.add_listener(hold)
        sim.place(card(fleet.people["pass"][0]))
        await asyncio.wait_for(in_tap.wait(), 10)
        up.offer(offer_for("2.0"))
        await wait_for(lambda: _true((root / "releases" / "2.0").exists()))
        for _ in range(20):  # the updater looks every 10 ms
            await asyncio.sleep(0.01)
        assert running(root) == "1.0" and not up.exit_requested.is_set()
        end_tap.set()
        sim.remove()
        await asyncio.wait_for(up.exit_requested.wait(), 10)
        await task
        assert running(root) == "2.0"
        assert (
            agent._reader is not None and not agent._reader.connected
        )  # drained: no tap could start after the switch


class FlakyVerifier:
    """Refuses the first ``bad`` lookups as malformed, then decides."""

    deadline_s = 1.0

    def __init__(self, bad: int) -> None:
        self.bad = bad
        self.taps: list[str] = []

    async def decide(self, cred: Credential, tap_id: str) -> Decision:
        self.taps.append(tap_id)
        if len(self.taps) <= self.bad:
            return decision("check", "server_refused:bad_request")
        return decision("check")


@pytest.mark.parametrize(("bad", "fails"), [(0, False), (2, False), (3, True)])
async def test_the_self_test_fails_only_when_every_attempt_fails(bad: int, fails: bool) -> None:
    verifier = FlakyVerifier(bad)
    recorded: list[dict[str, object]] = []

    async def record(what: str, detail: dict[str, object]) -> None:
        recorded.append(detail)

    why = await self_test_tap(
        cast(Verifier, verifier), reachable, record, "k-selftest", pause_s=0.0
    )
    assert bool(why) is fails
    assert len(set(verifier.taps)) == len(verifier.taps) == min(bad + 1, 3)  # fresh tap ids
    assert [(d["ok"], d["attempts"]) for d in recorded] == [(not fails, len(verifier.taps))]


async def test_kiosk_device_run_ends_by_itself_after_a_switch(
    tmp_path: Path,
    fleet: Fleet,
    sim: SimulatedReaderPort,
    prompt_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`kiosk device run` returns (systemd's Restart=always then starts `current`)."""
    root = tmp_path / "opt"
    install_first(root, "1.0")
    made: list[Updater] = []

    def updater(config: object, client: object) -> Updater:
        settings = UpdateSettings(
            release_key=KEY_HEX, root=str(root), state_dir=str(tmp_path / "var"), idle_s=0.0
        )
        up = Updater(
            settings,
            FakeSource(wheel_bytes("2.0")),
            running_version="1.0",
            builder=FakeBuilder(),
            poll_s=0.01,
        )
        made.append(up)
        return up

    monkeypatch.setattr(runtime, "_updater", updater)
    run = asyncio.create_task(runtime.run_device(device_config(tmp_path, sim, prompt_cache)))
    await wait_for(lambda: _true(bool(made)))
    made[0].offer(offer_for("2.0"))
    await asyncio.wait_for(run, 30)
    assert running(root) == "2.0"
