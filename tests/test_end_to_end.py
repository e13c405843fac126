"""One ID-card tap through every real part: simulated SAM on a pty → agent → server → voice,
gate and audit. Only the edges are fakes: the reader (pty), the speaker (MockPlayer) and the
GPIO pins (gpiozero's MockFactory)."""

from __future__ import annotations

import asyncio
import json
import socket
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from device.acting.voice import MockPlayer
from device.agent import TapResult
from device.config import DeviceConfig
from device.runtime import built_agent
from firmware_bridge.simserve import SimulatedReaderPort
from tests.e2e_support import (
    RELAY,
    Fleet,
    _true,
    audit_rows,
    card,
    device_config,
    fleet,
    prompt_cache,
    reader_ready,
    sim,
    tap,
    wait_for,
)

__all__ = ["fleet", "prompt_cache", "sim"]  # fixtures used by the tests below


async def test_pass_tap_end_to_end(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    player = MockPlayer()
    factory = MockFactory()
    config = device_config(tmp_path, sim, prompt_cache)
    async with AsyncExitStack() as stack:
        agent = await stack.enter_async_context(
            built_agent(config, bundle=fleet.bundle, player=player, pin_factory=factory)
        )
        relay = factory.pin(RELAY)
        await reader_ready(agent)
        person = fleet.people["pass"][0]
        result = await tap(agent, sim, person)

        assert result.decision.outcome == "pass" and not result.decision.offline
        assert result.spoken and result.latency_ms is not None and result.latency_ms < 1000
        assert [text for _p, text, _t in player.played] == ["绿码通行"]
        assert player.played[0][0].stat().st_size > 1000  # a real rendered clip
        # The relay pulsed: it went high and came back low after relay_pulse_s.
        await asyncio.sleep(0.4)
        states = [s.state for s in relay.states]
        assert True in states and states[-1] is False

        async def uploaded() -> bool:
            rows = await asyncio.to_thread(audit_rows, fleet.db)
            return any(r["kind"] == "decision" for r in rows)

        await wait_for(uploaded)
    rows = audit_rows(fleet.db)
    decisions = [r for r in rows if r["kind"] == "decision"]
    assert len(decisions) == 1
    row = decisions[0]
    assert row["device_id"] == fleet.bundle.device_id
    assert row["outcome"] == "pass" and row["prompt"] == "绿码通行" and not row["offline"]
    assert row["masked_id"] == person[:4] + "*" * 10 + person[-4:]
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    # Nothing on the server's audit side and nothing on the kiosk holds the clear number.
    for r in rows:
        assert person not in " ".join(str(v) for v in tuple(r))
    for f in (tmp_path / "kiosk").iterdir():
        if f.is_file():
            assert person.encode() not in f.read_bytes()


async def test_every_outcome_spoken_and_only_pass_opens(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    player = MockPlayer()
    factory = MockFactory()
    config = device_config(tmp_path, sim, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=player, pin_factory=factory
    ) as agent:
        await reader_ready(agent)
        relay = factory.pin(RELAY)
        for outcome, prompt in (("check", "非绿码请核查"), ("nat_expired", "你的核酸结果已超时")):
            relay.clear_states()
            result = await tap(agent, sim, fleet.people[outcome][0])
            assert (result.decision.outcome, result.decision.prompt) == (outcome, prompt)
            assert player.played[-1][1] == prompt
            await asyncio.sleep(0.1)
            assert True not in [s.state for s in relay.states], "gate opened on " + outcome


async def test_server_stopped_gives_offline_prompt_within_deadline(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    player = MockPlayer()
    config = device_config(tmp_path, sim, prompt_cache, deadline_s=0.5)
    config = config.with_overrides(server_url=dead_url)
    async with built_agent(
        config, bundle=fleet.bundle, player=player, pin_factory=MockFactory()
    ) as agent:
        await reader_ready(agent)
        result = await tap(agent, sim, fleet.people["pass"][0])
        assert result.decision.offline and result.decision.outcome == "check"
        assert result.spoken and player.played[-1][1] == "非绿码请核查"
        assert result.latency_ms is not None and result.latency_ms <= (0.5 + 0.5) * 1000
        status = await agent.status()
        assert status["journal_pending"] >= 1  # kept until the server is back


async def test_black_holed_server_prompt_within_deadline(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    held: list[asyncio.StreamWriter] = []

    async def swallow(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    hole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{hole.sockets[0].getsockname()[1]}"
    player = MockPlayer()
    config = device_config(tmp_path, sim, prompt_cache, deadline_s=0.6).with_overrides(
        server_url=url
    )
    try:
        async with built_agent(
            config, bundle=fleet.bundle, player=player, pin_factory=MockFactory()
        ) as agent:
            await reader_ready(agent)
            result = await tap(agent, sim, fleet.people["pass"][0])
            assert result.decision.offline and result.decision.outcome == "check"
            assert result.latency_ms is not None and 550 <= result.latency_ms <= 1100
    finally:
        for w in held:
            w.close()
        hole.close()
        await hole.wait_closed()


async def test_missing_audio_device_is_a_logged_fault_not_a_lost_tap(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    player = MockPlayer(missing=True)
    factory = MockFactory()
    config = device_config(tmp_path, sim, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=player, pin_factory=factory
    ) as agent:
        await reader_ready(agent)
        result = await tap(agent, sim, fleet.people["pass"][0])
        assert result.decision.outcome == "pass" and not result.spoken

        async def uploaded() -> bool:
            rows = await asyncio.to_thread(audit_rows, fleet.db)
            return any(r["kind"] == "fault" and "voice_fault" in r["detail"] for r in rows)

        await wait_for(uploaded)
    rows = audit_rows(fleet.db)
    decision = next(r for r in rows if r["kind"] == "decision")
    fault = next(r for r in rows if r["kind"] == "fault" and "voice_fault" in r["detail"])
    # The decision was journalled before the prompt failed; the fault names its tap.
    assert decision["seq"] < fault["seq"]
    assert json.loads(fault["detail"])["tap_id"] == json.loads(decision["detail"])["tap_id"]


async def test_reader_unplug_is_a_recorded_spoken_fault(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    player = MockPlayer()
    factory = MockFactory()
    config = device_config(tmp_path, sim, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=player, pin_factory=factory
    ) as agent:
        await reader_ready(agent)
        buzzer = factory.pin(23)
        sim.unplug()
        await wait_for(lambda: _true("设备故障，请联系工作人员" in player.texts))
        assert True in [s.state for s in buzzer.states]
        sim.replug()
        await reader_ready(agent)
        result = await tap(agent, sim, fleet.people["pass"][0])
        assert result.decision.outcome == "pass"

        async def recorded() -> bool:
            rows = await asyncio.to_thread(audit_rows, fleet.db)
            details = [r["detail"] for r in rows]
            return any("reader_lost" in d for d in details) and any(
                "reader_recovered" in d for d in details
            )

        await wait_for(recorded)
    fault = next(r for r in audit_rows(fleet.db) if r["kind"] == "fault")
    assert fault["outcome"] == "fault" and fault["prompt"] == "设备故障，请联系工作人员"


async def test_unreadable_card_gets_invalid_credential_prompt(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    player = MockPlayer()
    config = device_config(tmp_path, sim, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=player, pin_factory=MockFactory()
    ) as agent:
        await reader_ready(agent)
        results: asyncio.Queue[TapResult] = asyncio.Queue()
        agent.add_listener(results.put_nowait)
        broken = {**card(fleet.people["pass"][0]), "name": "\ud800"}  # text that cannot decode
        sim.place(broken)
        result = await asyncio.wait_for(results.get(), timeout=5)
        sim.remove()
        assert result.decision.outcome == "invalid_credential"
        assert result.decision.reasons == ("unreadable_card",)
        assert player.played[-1][1] == "证件无效，请重新刷卡"


async def test_agent_without_voice_still_decides_and_records_the_fault(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort
) -> None:
    config = DeviceConfig.from_dict(
        {
            "state_dir": str(tmp_path / "kiosk"),
            "reader": {"url": sim.path, "poll_interval_s": 0.02},
            "voice": {"voice": "no-such-voice", "player": "mock", "cache_dir": str(tmp_path / "p")},
            "gpio": {"pin_factory": "mock", "relay_pulse_s": 0.2},
            "upload": {"interval_s": 0.2},
        }
    )
    factory = MockFactory()
    async with built_agent(
        config, bundle=fleet.bundle, player=MockPlayer(), pin_factory=factory
    ) as agent:
        await reader_ready(agent)
        result = await tap(agent, sim, fleet.people["pass"][0])
        assert result.decision.outcome == "pass" and not result.spoken
        await asyncio.sleep(0.1)
        assert True in [s.state for s in factory.pin(RELAY).states]  # the gate still opens

        async def recorded() -> bool:
            rows = await asyncio.to_thread(audit_rows, fleet.db)
            return any(r["kind"] == "fault" and "voice_unavailable" in r["detail"] for r in rows)

        await wait_for(recorded, timeout=10)


async def test_fleet_config_is_picked_up_at_the_next_heartbeat(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    import sqlite3

    from server.fleet.registry import set_config

    config = device_config(tmp_path, sim, prompt_cache)
    config = config.with_overrides(heartbeat=replace(config.heartbeat, interval_s=0.3))
    async with built_agent(
        config, bundle=fleet.bundle, player=MockPlayer(), pin_factory=MockFactory()
    ) as agent:
        assert agent._verifier.deadline_s == 1.2
        with sqlite3.connect(fleet.db) as conn:
            set_config(conn, "site", "site-a", "verify.deadline_s", 0.8)
        await wait_for(lambda: _true(agent._verifier.deadline_s == 0.8), timeout=10)
        assert agent.config_version is not None
        assert (await agent.status())["config_version"] == agent.config_version


async def test_noise_instead_of_a_read_reply_is_an_unreadable_tap_within_budget(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    """Issue 10 part 5: the read reply never parses; the read timeout takes the unreadable
    path (prompt, decision, `card_unreadable` event) instead of silence."""
    from tests.device.test_unreadable import ManglingSam

    player = MockPlayer()
    config = device_config(tmp_path, sim, prompt_cache)
    config = config.with_overrides(reader=replace(config.reader, read_timeout_s=0.5))
    sim.sam = ManglingSam()
    sim.sam.mangle_next_read = "noise"
    async with built_agent(
        config, bundle=fleet.bundle, player=player, pin_factory=MockFactory()
    ) as agent:
        await reader_ready(agent)
        result = await tap(agent, sim, fleet.people["pass"][0])
        assert result.decision.outcome == "invalid_credential"
        assert result.decision.reasons == ("unreadable_card",)
        assert result.spoken and player.texts == ["证件无效，请重新刷卡"]
        assert result.latency_ms is not None and result.latency_ms < 150
        await asyncio.sleep(0.2)  # off the reader long enough for a find to see it gone
        again = await tap(agent, sim, fleet.people["pass"][0])
        assert again.decision.outcome == "pass"

        async def recorded() -> bool:
            rows = await asyncio.to_thread(audit_rows, fleet.db)
            return sum(1 for r in rows if r["kind"] == "decision") == 2

        await wait_for(recorded)
    rows = audit_rows(fleet.db)
    unreadable = [r for r in rows if "card_unreadable" in r["detail"]]
    assert len(unreadable) == 1 and "read" in json.loads(unreadable[0]["detail"])["error"]
    outcomes = [r["outcome"] for r in rows if r["kind"] == "decision"]
    assert outcomes == ["invalid_credential", "pass"]
