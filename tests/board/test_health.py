"""The board's reading of a heartbeat and of "today" (no storage)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from server.board.kiosks import day_start
from server.board.pages import by_site_and_gate
from server.board.render import clock
from server.fleet.health import health_of
from tests.board.support import status


def parts(**changes: Any) -> tuple[str, str, str]:
    health = health_of(json.dumps(status(**changes)), None)
    return health["reader"], health["camera"], health["audio"]


def test_parts_follow_what_the_kiosk_reports() -> None:
    assert parts() == ("ok", "ok", "absent")  # no audio report: no opinion
    assert parts(reader={"connected": False}) == ("fault", "ok", "absent")
    camera_down = [{"source": "/dev/video0", "live": True, "connected": False, "frames": 3}]
    assert parts(sources=camera_down) == ("ok", "fault", "absent")
    recording = [{"source": "clip.mp4", "live": False, "connected": False, "frames": 3}]
    assert parts(sources=recording) == ("ok", "ok", "absent")  # a file ends by design
    assert parts(audio={"ok": False, "last_error": "no card"})[2] == "fault"
    assert parts(reader=None, sources=[]) == ("absent", "absent", "absent")


def test_a_missing_or_broken_heartbeat_reads_as_unknown() -> None:
    for beat in (None, "", "not json", "[1, 2]"):
        health = health_of(beat, None)
        assert (health["reader"], health["clock_trusted"], health["version"]) == (
            "absent",
            None,
            None,
        )


def test_today_starts_at_midnight_china_time() -> None:
    assert day_start(datetime(2026, 11, 28, 15, 59, tzinfo=UTC)) == "2026-11-27T16:00:00+00:00"
    assert day_start(datetime(2026, 11, 28, 16, 0, tzinfo=UTC)) == "2026-11-28T16:00:00+00:00"
    assert clock("2026-11-28T16:00:05+00:00") == "00:00:05"
    assert clock(None) == "—"


def test_kiosks_are_grouped_by_site_then_gate() -> None:
    kiosks = [
        {"site": "a", "gate": "1", "serial": "x"},
        {"site": "a", "gate": "1", "serial": "y"},
        {"site": "a", "gate": "2", "serial": "z"},
        {"site": "b", "gate": "1", "serial": "w"},
    ]
    grouped = by_site_and_gate(kiosks)
    assert [(site, [(gate, len(ks)) for gate, ks in gates]) for site, gates in grouped] == [
        ("a", [("1", 2), ("2", 1)]),
        ("b", [("1", 1)]),
    ]
