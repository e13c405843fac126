"""The QR scanner turns OpenCV's thread pool off (its workers spin after each small call)."""

from __future__ import annotations

import cv2
import pytest

from device.sources.camera import MockCamera
from device.sources.qrscan import QrScanner


@pytest.mark.parametrize("threads", [1, None])
def test_a_started_scanner_runs_opencv_on_one_thread_unless_told_otherwise(
    threads: int | None,
) -> None:
    """At 15 fps the pool doubled the decoder's CPU (bench/RESULTS.md "Kiosk resources"), so
    the agent's scanner runs OpenCV single-threaded; ``opencv_threads=None`` leaves the
    process's setting alone."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    scanner = QrScanner(MockCamera([], live=False), opencv_threads=threads)
    try:
        scanner.start(lambda _credential: None)
        assert cv2.getNumThreads() == (1 if threads == 1 else 3)
    finally:
        scanner.stop()
        cv2.setNumThreads(before)
