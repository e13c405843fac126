"""`kiosk device run` logs one line per tap (issue 14, part 2): masked ID, outcome, reasons,
latency, offline; at INFO, and never the clear ID number."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from device.acting.voice import MockPlayer
from device.runtime import built_agent
from firmware_bridge.simserve import SimulatedReaderPort
from tests.e2e_support import Fleet, _true, device_config, fleet, prompt_cache, sim, tap, wait_for

from .test_agent_order import Steps, agent, cred

__all__ = ["fleet", "prompt_cache", "sim"]  # fixtures used by the tests below


def _tap_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "device.agent" and r.getMessage().startswith("tap ")
    ]


async def test_each_tap_is_one_info_line_with_what_a_guard_needs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="device.agent")
    kiosk = agent(Steps())
    await kiosk.handle(cred())
    await kiosk.handle(cred())
    lines = _tap_lines(caplog)
    assert len(lines) == 2 and all(r.levelno == logging.INFO for r in lines)
    text = lines[0].getMessage()
    assert "1101**********1234 pass reasons=- latency=" in text and " ms offline=no" in text
    assert lines[0].__dict__["outcome"] == "pass" and lines[0].__dict__["offline"] is False


async def test_a_tap_the_journal_refused_is_logged_silent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="device.agent")
    await agent(Steps(), journal_fails=True).handle(cred())
    (line,) = _tap_lines(caplog)
    assert "latency=silent" in line.getMessage()


async def test_a_real_card_is_logged_masked(
    tmp_path: Path,
    fleet: Fleet,
    sim: SimulatedReaderPort,
    prompt_cache: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the real reader and server: the line carries the reasons the server gave and
    the masked ID, and no record (message, arguments or fields) holds the clear number."""
    caplog.set_level(logging.INFO)
    config = device_config(tmp_path, sim, prompt_cache)
    person = fleet.people["check"][0]
    async with AsyncExitStack() as stack:
        kiosk = await stack.enter_async_context(
            built_agent(config, bundle=fleet.bundle, player=MockPlayer(), pin_factory=MockFactory())
        )
        await wait_for(lambda: _true(kiosk._reader is not None and kiosk._reader.connected))
        result = await tap(kiosk, sim, person)
    (line,) = _tap_lines(caplog)
    d = result.decision
    masked = f"{person[:4]}**********{person[-4:]}"
    assert d.masked_id == masked and d.outcome == "check" and d.reasons
    assert line.getMessage().startswith(f"tap {d.tap_id}: {masked} check ")
    assert f"reasons={','.join(d.reasons)} " in line.getMessage()
    assert line.getMessage().endswith("offline=no")
    for record in caplog.records:
        assert person not in record.getMessage()
        assert person not in repr(vars(record))
