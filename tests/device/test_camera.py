"""Camera backends and the capture thread: drops, end of file, watchdog, reopen."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device.errors import CameraEnded, CameraError
from device.sources.camera import (
    CaptureThread,
    Frame,
    MockCamera,
    OpenCvCamera,
)
from tests.device import qrframes


def tiny(i: int) -> np.ndarray:
    return np.full((4, 4, 3), i % 256, np.uint8)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, what: str, detail: dict[str, Any]) -> None:
        with self._lock:
            self.items.append((what, detail))

    def names(self) -> list[str]:
        with self._lock:
            return [w for w, _ in self.items]


def endless() -> Iterator[np.ndarray]:
    i = 0
    while True:
        yield tiny(i)
        i += 1


def test_live_capture_drops_oldest_frames_and_counts_them() -> None:
    cam = MockCamera([tiny(i) for i in range(50)], live=True)
    cap = CaptureThread(cam, queue_size=2, stall_s=30)
    cap.start()
    try:
        wait_for(lambda: len(cam.reads) == 50)
        wait_for(lambda: cap.health()["frames"] == 50)
        got = [cap.get(timeout=1), cap.get(timeout=1)]
        assert [f.index for f in got if f is not None] == [48, 49]  # the newest survive
        assert cap.get(timeout=0.05) is None
        health = cap.health()
        assert health["drops"] == 48
        assert health["frames"] == 50
    finally:
        cap.stop()


def test_slow_consumer_sees_recent_frames_only() -> None:
    cam = MockCamera(endless(), fps=200, live=True)
    cap = CaptureThread(cam, queue_size=2, stall_s=30)
    cap.start()
    seen: list[Frame] = []
    try:
        for _ in range(5):
            frame = cap.get(timeout=1)
            assert frame is not None
            seen.append(frame)
            time.sleep(0.05)  # a consumer ~10× slower than the camera
        health = cap.health()
    finally:
        cap.stop()
    gaps = [b.index - a.index for a, b in itertools.pairwise(seen)]
    assert all(g > 1 for g in gaps), gaps
    assert health["drops"] > 10
    assert health["fps"] is not None and health["fps"] > 50


def test_file_source_is_lossless_and_ends_once() -> None:
    events = Events()
    cam = MockCamera([tiny(i) for i in range(20)], live=False, fps=10)
    cap = CaptureThread(cam, queue_size=2, on_event=events)
    cap.start()
    got: list[Frame] = []
    try:
        with pytest.raises(CameraEnded):
            while True:
                frame = cap.get(timeout=2)
                assert frame is not None
                got.append(frame)
                time.sleep(0.001)
        with pytest.raises(CameraEnded):  # stays ended
            cap.get(timeout=0.1)
        assert [f.index for f in got] == list(range(20))
        assert [round(f.t, 3) for f in got[:3]] == [0.0, 0.1, 0.2]  # position in the file
        assert cap.health()["drops"] == 0
        assert cap.ended
        time.sleep(0.1)
        assert len(cam.reads) == 20  # no busy loop at the end of the file
        assert events.names().count("camera_ended") == 1
        assert cap._reader is not None and not cap._reader.is_alive()
    finally:
        cap.stop()


def test_watchdog_reopens_a_stalled_camera() -> None:
    events = Events()
    cam = MockCamera(endless(), fps=100, live=True)
    cap = CaptureThread(cam, stall_s=0.3, reopen_interval_s=0.05, on_event=events)
    cap.start()
    try:
        wait_for(lambda: cap.health()["frames"] > 5)
        assert cap.connected
        cam.stall()
        wait_for(lambda: "camera_lost" in events.names())
        assert cap.health()["restarts"] == 1
        wait_for(lambda: events.names()[-1] == "camera_ready" and cap.connected)
        frames_after = cap.health()["frames"]
        wait_for(lambda: cap.health()["frames"] > frames_after + 5)
        assert cam.opens == 2 and cam.closes >= 1
        assert events.names() == ["camera_ready", "camera_lost", "camera_ready"]
        lost = events.items[1][1]
        assert "no frame" in lost["error"]
        assert cap.health()["restarts"] == 1
    finally:
        cap.stop()


def test_unavailable_camera_is_retried_and_reported_once() -> None:
    events = Events()
    cam = MockCamera(endless(), fps=100, live=True)
    cam.fail_opens(4)
    cap = CaptureThread(cam, stall_s=1.0, reopen_interval_s=0.02, on_event=events)
    cap.start()
    try:
        wait_for(lambda: cap.connected)
        assert events.names() == ["camera_lost", "camera_ready"]
        health = cap.health()
        assert health["open_failures"] == 4
        assert health["restarts"] == 0
        assert health["last_frame_age_s"] is not None and health["last_frame_age_s"] < 1
    finally:
        cap.stop()


def test_stop_unblocks_a_hung_read() -> None:
    cam = MockCamera(endless(), fps=100, live=True)
    cap = CaptureThread(cam, stall_s=30)
    cap.start()
    wait_for(lambda: cap.health()["frames"] > 2)
    cam.stall()
    time.sleep(0.05)
    started = time.monotonic()
    cap.stop()
    assert time.monotonic() - started < 1.0


def test_opencv_camera_reads_a_video_file(tmp_path: Path) -> None:
    frames = [qrframes.idle_frame(index=i) for i in range(12)]
    path = qrframes.write_video(frames, tmp_path / "idle.avi")
    cam = OpenCvCamera(str(path))
    assert not cam.live
    cap = CaptureThread(cam)
    cap.start()
    got: list[Frame] = []
    try:
        with pytest.raises(CameraEnded):
            while True:
                frame = cap.get(timeout=2)
                assert frame is not None
                got.append(frame)
    finally:
        cap.stop()
    assert len(got) == 12
    assert got[0].image.shape == (480, 640, 3)
    assert cam.fps == pytest.approx(30.0)


def test_opencv_camera_kinds_and_missing_file(tmp_path: Path) -> None:
    assert OpenCvCamera("0").live
    assert OpenCvCamera("rtsp://10.0.0.5/stream").live
    assert OpenCvCamera("/dev/video0").live
    missing = OpenCvCamera(str(tmp_path / "missing.avi"))
    assert not missing.live
    with pytest.raises(CameraError):
        missing.open()
    events = Events()
    cap = CaptureThread(missing, on_event=events)
    cap.start()
    try:
        with pytest.raises(CameraEnded):
            cap.get(timeout=2)
    finally:
        cap.stop()
    assert events.names() == ["camera_lost", "camera_ended"]
    assert cap.health()["open_failures"] == 1


def test_scan_gives_up_on_a_camera_that_is_not_there() -> None:
    import io
    import time

    from device.sources.camera_cli import scan

    err = io.StringIO()
    started = time.monotonic()
    assert scan("9", no_frame_timeout_s=1.0, out=io.StringIO(), err=err) == 2
    assert time.monotonic() - started < 10
    assert "no frame from '9'" in err.getvalue()
