"""Issue 5 through the agent: social-security card, QR codes the server resolves, signed passes.

The camera itself is tested in tests/device/test_camera*.py; here QR credentials are handed
to the agent as the camera's scanner hands them over (a Credential with the decoded text).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from device.acting.voice import MockPlayer
from device.agent import TapResult
from device.runtime import built_agent
from device.sources.credentials import Credential
from device.sources.sscard import SimulatedCardSlot, SimulatedSsCard, SsCardReader
from firmware_bridge.simserve import SimulatedReaderPort
from server.config import ServerConfig
from server.offline.passes import issue_pass
from server.verify.importer import import_csv
from tests.e2e_support import (
    NOW,
    Fleet,
    _true,
    device_config,
    fleet,
    prompt_cache,
    sim,
    wait_for,
)

__all__ = ["fleet", "prompt_cache", "sim"]  # fixtures used below


async def submit(agent: object, cred: Credential) -> TapResult:
    results: asyncio.Queue[TapResult] = asyncio.Queue()
    agent.add_listener(results.put_nowait)  # type: ignore[attr-defined]
    try:
        await agent.submit(cred)  # type: ignore[attr-defined]
        return await asyncio.wait_for(results.get(), timeout=5)
    finally:
        agent._listeners.clear()  # type: ignore[attr-defined]


def qr(token: str) -> Credential:
    return Credential(kind="qr", id_number="", completed_at=time.monotonic(), token=token)


async def test_social_security_card_is_verified_like_an_id_card(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    slot = SimulatedCardSlot()
    ss_reader = SsCardReader(slot, poll_interval_s=0.02)
    player = MockPlayer()
    config = device_config(tmp_path, sim, prompt_cache)
    async with built_agent(
        config,
        bundle=fleet.bundle,
        player=player,
        pin_factory=MockFactory(),
        extra_sources=[ss_reader],
    ) as agent:
        results: asyncio.Queue[TapResult] = asyncio.Queue()
        agent.add_listener(results.put_nowait)
        await wait_for(lambda: _true(ss_reader.connected))
        slot.insert(SimulatedSsCard(fleet.people["pass"][0]))
        result = await asyncio.wait_for(results.get(), timeout=5)
        assert result.decision.outcome == "pass" and not result.decision.offline
        assert player.played[-1][1] == "绿码通行"
        slot.remove()
        await asyncio.sleep(0.2)  # the reader sees the empty slot: the next card is a new tap
        slot.insert(SimulatedSsCard(fleet.people["check"][0]))
        result = await asyncio.wait_for(results.get(), timeout=5)
        assert result.decision.outcome == "check"
        status = await agent.status()
        assert status["sources"] and status["sources"][0]["connected"]


async def test_qr_tokens_resolved_by_the_server(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    person = fleet.people["nat_expired"][0]
    tokens = tmp_path / "tokens.csv"
    expires = (NOW.replace(year=NOW.year + 1)).isoformat()
    tokens.write_text(f"token,id_number,expires_at\nHC:abc123,{person},{expires}\n")
    assert import_csv(fleet.db, "qr_token", tokens).ok
    config = device_config(tmp_path, sim, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=MockPlayer(), pin_factory=MockFactory()
    ) as agent:
        known = await submit(agent, qr("HC:abc123"))
        assert known.decision.outcome == "nat_expired" and not known.decision.offline
        assert known.decision.masked_id == person[:4] + "*" * 10 + person[-4:]
        foreign = await submit(agent, qr("https://example.com/not-a-health-code"))
        assert foreign.decision.outcome == "invalid_credential"
        assert "unknown_qr" in foreign.decision.reasons


async def test_signed_pass_decides_offline_once(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    issued = await issue_pass(
        ServerConfig.default(database=fleet.db),
        fleet.people["pass"][0],
        site=fleet.bundle.site,
        minutes=5,
    )
    token = issued.text
    config = device_config(tmp_path, sim, prompt_cache).with_overrides(
        server_url="http://127.0.0.1:9"  # the server is unreachable: the pass needs no server
    )
    async with built_agent(
        config, bundle=fleet.bundle, player=MockPlayer(), pin_factory=MockFactory()
    ) as agent:
        # the kiosk trusts its clock once it agreed with the server's
        agent._verifier.clock.observe_server_time(dt.datetime.now(dt.UTC).isoformat())
        first = await submit(agent, qr(token))
        assert first.decision.outcome == "pass" and first.decision.offline
        assert first.decision.reasons == ("signed_pass", "pass_claim_unavailable")
        assert first.latency_ms is not None
        replay = await submit(agent, qr(token))
        assert replay.decision.outcome == "invalid_credential"
        assert replay.decision.reasons == ("pass_replayed",)
        head, payload, sig = token.split(".")
        forged = base64.urlsafe_b64decode(payload + "==").replace(b'"o":"pass"', b'"o":"pass" ')
        tampered = ".".join((head, base64.urlsafe_b64encode(forged).decode().rstrip("="), sig))
        bad = await submit(agent, qr(tampered))
        assert bad.decision.outcome == "invalid_credential"
        assert bad.decision.reasons == ("pass_bad_signature",)


async def test_a_pass_shown_to_the_camera_opens_the_gate(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    from device.sources.camera import MockCamera
    from device.sources.qrscan import QrScanner
    from tests.device.qrframes import make_sequence, shot

    issued = await issue_pass(
        ServerConfig.default(database=fleet.db),
        fleet.people["pass"][0],
        site=fleet.bundle.site,
        minutes=5,
    )
    frames = make_sequence([shot("large", issued.text), shot("plain", b"\xff\xfe garbage")])
    scanner = QrScanner(MockCamera(frames.frames, fps=30.0, live=False), dedupe_s=3.0)
    factory = MockFactory()
    player = MockPlayer()
    config = device_config(tmp_path, sim, prompt_cache)
    async with built_agent(
        config,
        bundle=fleet.bundle,
        player=player,
        pin_factory=factory,
        extra_sources=[scanner],
    ) as agent:
        agent._verifier.clock.observe_server_time(dt.datetime.now(dt.UTC).isoformat())
        results: asyncio.Queue[TapResult] = asyncio.Queue()
        agent.add_listener(results.put_nowait)
        first = await asyncio.wait_for(results.get(), timeout=10)
        assert first.decision.reasons == ("signed_pass", "pass_claimed"), first.decision
        assert first.decision.outcome == "pass"
        assert True in [s.state for s in factory.pin(17).states]  # the gate opened
        garbage = await asyncio.wait_for(results.get(), timeout=10)
        assert garbage.decision.outcome == "invalid_credential"
        # zbar may hand binary back as Latin-1 text (then the server does not know it) or
        # as bytes the scanner refuses: either way the citizen hears "invalid"
        assert garbage.decision.reasons[0] in ("unreadable_qr", "unknown_qr")
        assert player.played[-1][1] == "证件无效，请重新刷卡"
        await asyncio.sleep(0.5)
        assert results.empty()  # the pass held in view for a second was one credential
