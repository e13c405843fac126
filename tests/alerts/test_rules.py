"""What a heartbeat says about each alert kind (pure functions, no database)."""

from __future__ import annotations

from typing import Any

from server.alerts.rules import Backlogs, heartbeat_verdicts
from server.alerts.settings import AlertSettings

NOW = 1_800_000_000.0
CAMERA = {"source": "/dev/video0", "live": True, "connected": True, "fps": 12.0, "frames": 9}
SSCARD = {"backend": "pcsc", "connected": True, "reads": 3}


def verdicts(**status: Any) -> dict[str, Any]:
    return heartbeat_verdicts({"boot_id": "b", **status}, NOW)


def test_a_disconnected_reader_or_card_reader_is_a_reader_fault() -> None:
    reader = {"url": "http://r", "connected": False}
    assert verdicts(reader=reader, sources=[CAMERA])["reader_fault"] == {"readers": ["http://r"]}
    down = verdicts(reader=None, sources=[{**SSCARD, "connected": False}])
    assert down["reader_fault"] == {"readers": ["pcsc"]}
    assert (
        verdicts(reader={"url": "http://r", "connected": True}, sources=[SSCARD])["reader_fault"]
        is None
    )


def test_a_stalled_live_camera_is_a_camera_fault_but_a_recording_that_ended_is_not() -> None:
    stalled = {**CAMERA, "connected": False}
    assert verdicts(sources=[stalled, SSCARD])["camera_fault"] == {"cameras": ["/dev/video0"]}
    ended = {**CAMERA, "connected": False, "live": False, "source": "demo.mp4"}
    assert verdicts(sources=[ended])["camera_fault"] is None
    assert verdicts(sources=[CAMERA])["camera_fault"] is None


def test_a_heartbeat_silent_on_a_kind_leaves_its_alert_alone() -> None:
    quiet = verdicts()
    for kind in ("reader_fault", "camera_fault", "audio_fault", "clock_untrusted", "cache_stale"):
        assert kind not in quiet


def test_audio_clock_and_cache_verdicts() -> None:
    assert verdicts(audio={"ok": False, "last_error": "aplay: no device"})["audio_fault"] == {
        "error": "aplay: no device"
    }
    assert verdicts(audio={"ok": True})["audio_fault"] is None
    assert verdicts(clock_trusted=False)["clock_untrusted"] == {"clock_trusted": False}
    assert verdicts(clock_trusted=True)["clock_untrusted"] is None
    old = {"hits": 0, "snapshot_at": NOW - 7201, "max_age_s": 7200}
    assert verdicts(cache=old)["cache_stale"] == {"age_s": 7201, "max_age_s": 7200}
    fresh = {**old, "snapshot_at": NOW - 60}
    assert verdicts(cache=fresh)["cache_stale"] is None
    never = {**old, "snapshot_at": None}
    assert verdicts(cache=never)["cache_stale"] == {"snapshot_at": None, "max_age_s": 7200}
    assert "cache_stale" not in verdicts(cache={"hits": 1, "misses": 0, "expired": 0})


def test_a_backlog_raises_at_its_threshold_or_when_it_keeps_rising() -> None:
    s = AlertSettings(backlog_threshold=1000, backlog_beats=3, backlog_rising_min=50)
    backlogs = Backlogs()

    def pending(n: int, device: str = "k") -> dict[str, Any] | str | None:
        return backlogs.verdict(device, {"journal_pending": n}, s).get("journal_backlog", "-")

    assert pending(0) is None
    assert pending(1000) == {"pending": 1000, "threshold": 1000, "rising": False}
    assert pending(600) == "-"  # between half the threshold and the threshold: no change
    assert pending(400) is None
    # rising three beats in a row from 50 raises; below rising_min it does not
    # (a backlog higher than three beats ago is left as it is: no flapping while it grows)
    assert [pending(n, "r") for n in (10, 20, 30)] == [None, "-", "-"]
    assert pending(60, "r") == {"pending": 60, "threshold": 1000, "rising": True}
    assert pending(60, "r") == "-"  # still higher than three beats ago: stays open
    assert pending(60, "r") is None  # flat for three beats: no longer growing


def test_a_source_is_named_without_credentials_in_its_url() -> None:
    reader = {"url": "http://kiosk:s3cret@10.0.0.5:8000/reader", "connected": False}
    assert verdicts(reader=reader)["reader_fault"] == {"readers": ["http://10.0.0.5:8000/reader"]}
