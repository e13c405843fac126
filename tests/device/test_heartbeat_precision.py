"""A kiosk on the server's own clock reports a clock skew of ~0 (issue 14, part 4): its
heartbeat's ``sent_at`` keeps the sub-second part, which a whole-second ``sent_at`` lost
(0.5-0.8 s of skew that nobody had)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import server.fleet.sessions
from tests.device.test_client_sessions import Rig, rig, verify

__all__ = ["rig"]  # the fixture, used by name

#: A fixed instant 0.75 s past a whole second: both clocks read it.
NOW = datetime(2026, 11, 28, 12, 0, 0, 750000, tzinfo=UTC)


async def test_a_kiosk_on_the_server_clock_reports_no_skew(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.fleet.sessions, "utc_now", lambda: NOW)
    _, client = rig.kiosk("SN-1", wall_clock=NOW.timestamp)
    async with client:
        await verify(client)
        answer = await client.heartbeat({"boot_id": "b"})
    assert abs(answer["clock_skew_s"]) < 0.1
