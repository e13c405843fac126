"""Cameras and the capture thread that reads them.

Two backends with one interface (`Camera`), gpiozero-style:

- `OpenCvCamera(source)`: `cv2.VideoCapture` on a device index (`"0"`), a V4L2 device path
  (`/dev/video0`), a video file, or a stream URL (`rtsp://…`, `http://…`). Devices are asked for
  640×480 at the target frame rate.
- `MockCamera(frames)`: in-package, for tests and demos. Serves a list or a generator of frames,
  optionally paced at `fps`; records what happened (`opens`, `closes`, `reads`); can be told to
  stall (`stall()`) or to fail its next opens (`fail_opens(n)`).

`CaptureThread` (after Frigate's camera pipeline) reads a camera on its own thread into a
bounded queue. A live source never waits for the consumer: when the queue is full the OLDEST
frame is dropped and counted, so the consumer always gets the newest frames. A file is read at
the consumer's pace without drops, and its end is reported once (`CameraEnded`), not spun on.
A watchdog thread reopens a live camera that has delivered no frame for `stall_s` and counts
the restart; `camera_lost` / `camera_ready` events report the outage and the recovery.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from device.errors import CameraEnded, CameraError

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
SourceEvent = Callable[[str, dict[str, Any]], None]
"""Called from a camera thread: camera_lost (stall, or cannot open; once per outage),
camera_ready (first frame after start or after an outage), camera_ended (end of a file)."""


class Camera(Protocol):
    """What `CaptureThread` needs of a camera backend."""

    source: str

    @property
    def live(self) -> bool:
        """True for devices and streams (frames drop when late), False for files."""
        ...

    @property
    def fps(self) -> float:
        """The source's nominal frame rate (0.0 when unknown)."""
        ...

    def open(self) -> None:
        """Open (or reopen) the source; raises `CameraError`."""
        ...

    def read(self) -> Image | None:
        """The next BGR frame; None at the end of a file or when a live read failed."""
        ...

    def close(self) -> None:
        """Release the source; a read blocked in another thread returns None."""
        ...


def _device_index(source: str) -> int | None:
    return int(source) if source.strip().isdigit() else None


class OpenCvCamera:
    """A camera, video file or stream through `cv2.VideoCapture`."""

    def __init__(
        self,
        source: str,
        *,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.source = source
        self._index = _device_index(source)
        self._is_stream = "://" in source
        self._is_device = self._index is not None or source.startswith("/dev/")
        self._width, self._height, self._target_fps = width, height, fps
        self._timeout_ms = int(timeout_s * 1000)
        self._lock = threading.Lock()
        self._cap: Any = None
        self._in_read: Any = None
        self._fps = 0.0

    @property
    def live(self) -> bool:
        return self._is_device or self._is_stream

    @property
    def fps(self) -> float:
        return self._fps

    def open(self) -> None:
        self.close()
        if not (self.live or Path(self.source).is_file()):
            raise CameraError(f"no such video file: {self.source}")
        if self._index is not None:
            cap = cv2.VideoCapture(self._index)
        elif self._is_stream:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                self._timeout_ms,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                self._timeout_ms,
            ]
            cap = cv2.VideoCapture(self.source, cv2.CAP_ANY, params)
        else:
            cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open camera source {self.source!r}")
        if self._is_device:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self._width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self._height)
            cap.set(cv2.CAP_PROP_FPS, self._target_fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a backlog
        self._fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        with self._lock:
            self._cap = cap

    def read(self) -> Image | None:
        with self._lock:
            cap = self._cap
            if cap is None:
                return None
            self._in_read = cap
        ok, image = False, None
        try:
            ok, image = cap.read()
        finally:
            with self._lock:
                if self._in_read is cap:
                    self._in_read = None
                if cap is not self._cap:  # closed while we were reading: ours to release
                    cap.release()
        return image if ok and image is not None else None

    def close(self) -> None:
        # VideoCapture is not thread-safe: a capture being read is released by its reader.
        with self._lock:
            cap, self._cap = self._cap, None
            if cap is not None and cap is not self._in_read:
                cap.release()


class MockCamera:
    """A camera that serves given frames and records what was done to it."""

    def __init__(
        self,
        frames: Iterable[Image],
        *,
        fps: float | None = None,
        live: bool = True,
        source: str = "mock",
    ) -> None:
        self.source = source
        self._iter: Iterator[Image] = iter(frames)
        self._fps = fps
        self._live = live
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._open = False
        self._stalled = False
        self._fail_opens = 0
        self._next_at = 0.0
        self._served = 0
        self.opens = 0
        self.failed_opens = 0
        self.closes = 0
        self.reads: list[int] = []  # index of each frame served, in order

    @property
    def live(self) -> bool:
        return self._live

    @property
    def fps(self) -> float:
        return float(self._fps or 0.0)

    def stall(self) -> None:
        """Stop delivering: reads block until the camera is closed (a hung device)."""
        with self._lock:
            self._stalled = True

    def fail_opens(self, n: int) -> None:
        """The next `n` opens raise `CameraError` (an unplugged camera)."""
        with self._lock:
            self._fail_opens = n

    def open(self) -> None:
        with self._lock:
            if self._fail_opens > 0:
                self._fail_opens -= 1
                self.failed_opens += 1
                raise CameraError(f"mock camera {self.source} unavailable")
            self.opens += 1
            self._open = True
            self._stalled = False
            self._wake.clear()
            self._next_at = time.monotonic()

    def read(self) -> Image | None:
        with self._lock:
            if not self._open:
                return None
            stalled = self._stalled
            wake = self._wake
        if stalled:
            wake.wait()  # until close()
            return None
        if self._fps:
            delay = self._next_at - time.monotonic()
            if delay > 0 and wake.wait(delay):
                return None
            self._next_at = max(self._next_at, time.monotonic() - 1.0) + 1.0 / self._fps
        try:
            image = next(self._iter)
        except StopIteration:
            if not self._live:
                return None
            wake.wait()  # a live camera that runs out has stopped delivering
            return None
        with self._lock:
            self.reads.append(self._served)
            self._served += 1
        return image

    def close(self) -> None:
        with self._lock:
            if self._open:
                self.closes += 1
            self._open = False
            self._wake.set()


@dataclass(frozen=True)
class Frame:
    """One captured frame."""

    index: int  # position in the source since start (frames dropped later keep their number)
    image: Image
    t: float  # source clock, seconds: monotonic capture time (live) or position in the file
    captured_at: float  # time.monotonic() when it was read


_END = None  # queue sentinel: the file ended


class CaptureThread:
    """Reads a camera on its own thread into a bounded queue, with a stall watchdog."""

    def __init__(
        self,
        camera: Camera,
        *,
        queue_size: int = 2,
        stall_s: float = 3.0,
        reopen_interval_s: float = 1.0,
        on_event: SourceEvent | None = None,
    ) -> None:
        self.camera = camera
        self.stall_s = stall_s
        self.reopen_interval_s = reopen_interval_s
        self._on_event = on_event
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._gen = 0
        self._reader: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._times: collections.deque[float] = collections.deque(maxlen=60)
        self._streaming_since: float | None = None  # opened, waiting for or getting frames
        self._last_frame_at: float | None = None
        self._down = False  # an outage was announced and has not ended
        self._ready_once = False
        self._next_index = 0
        self.frames = 0
        self.drops = 0
        self.restarts = 0
        self.open_failures = 0
        self.read_failures = 0
        self.ended = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._spawn_reader()
        if self.camera.live:
            self._watchdog = threading.Thread(
                target=self._watch, name="camera-watchdog", daemon=True
            )
            self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._gen += 1
            reader, self._reader = self._reader, None
        self.camera.close()
        for thread in (reader, self._watchdog):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=2)
        self._watchdog = None

    @property
    def connected(self) -> bool:
        """True while frames arrive (the last one less than `stall_s` ago)."""
        with self._lock:
            last = self._last_frame_at
            return (
                self._streaming_since is not None
                and last is not None
                and time.monotonic() - last <= self.stall_s
            )

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame, None if none came within `timeout`; raises `CameraEnded`."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_END)  # every later get() ends too
            raise CameraEnded(f"end of {self.camera.source}")
        return item

    def health(self) -> dict[str, Any]:
        """Capture figures for the heartbeat."""
        now = time.monotonic()
        with self._lock:
            times = list(self._times)
            last = self._last_frame_at
            return {
                "source": self.camera.source,
                "live": self.camera.live,
                "connected": self._streaming_since is not None
                and last is not None
                and now - last <= self.stall_s,
                "fps": (
                    round((len(times) - 1) / (times[-1] - times[0]), 1)
                    if len(times) > 1 and times[-1] > times[0]
                    else None
                ),
                "frames": self.frames,
                "drops": self.drops,
                "restarts": self.restarts,
                "open_failures": self.open_failures,
                "read_failures": self.read_failures,
                "last_frame_age_s": round(now - last, 3) if last is not None else None,
                "ended": self.ended,
            }

    # -- threads -----------------------------------------------------------------------------
    def _spawn_reader(self) -> None:
        with self._lock:
            gen = self._gen
            self._reader = threading.Thread(
                target=self._read_loop, args=(gen,), name="camera-capture", daemon=True
            )
            thread = self._reader
        thread.start()

    def _current(self, gen: int) -> bool:
        return not self._stop.is_set() and gen == self._gen

    def _event(self, what: str, **detail: Any) -> None:
        if self._on_event is not None:
            try:
                self._on_event(what, detail)
            except Exception:
                log.exception("camera event handler failed")

    def _lost(self, error: str) -> None:
        with self._lock:
            announce = not self._down
            self._down = True
        if announce:
            log.warning("camera %s lost: %s", self.camera.source, error)
            self._event("camera_lost", source=self.camera.source, error=error)

    def _read_loop(self, gen: int) -> None:
        cam = self.camera
        while self._current(gen):
            try:
                cam.open()
            except Exception as exc:  # CameraError, or a backend error for a bad source
                with self._lock:
                    self.open_failures += 1
                self._lost(f"cannot open: {exc}")
                if not cam.live:
                    self._finish(gen)  # a file that cannot be opened will not appear
                    return
                self._stop.wait(self.reopen_interval_s)
                continue
            with self._lock:
                if gen != self._gen:
                    return
                self._streaming_since = time.monotonic()
            self._stream(gen)
            return

    def _stream(self, gen: int) -> None:
        cam = self.camera
        fps = cam.fps or 30.0
        while self._current(gen):
            try:
                image = cam.read()
            except Exception as exc:
                log.debug("camera read failed: %s", exc)
                image = None
            if not self._current(gen):
                return
            if image is None:
                if not cam.live:
                    self._finish(gen)
                    return
                with self._lock:
                    self.read_failures += 1
                self._stop.wait(0.02)  # the watchdog reopens the camera if this persists
                continue
            now = time.monotonic()
            with self._lock:
                index = self._next_index
                self._next_index += 1
                self.frames += 1
                self._times.append(now)
                self._last_frame_at = now
                recovered = self._down or not self._ready_once
                self._down = False
                self._ready_once = True
            if recovered:
                log.info("camera %s ready", cam.source)
                self._event("camera_ready", source=cam.source)
            t = now if cam.live else index / fps
            self._put(Frame(index, image, t, now), gen)

    def _put(self, item: Frame | None, gen: int) -> None:
        if self.camera.live and item is not _END:
            while True:  # never wait for the consumer: drop the oldest frame instead
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        continue
                    with self._lock:
                        self.drops += 1
        while self._current(gen):  # a file: lossless, at the consumer's pace
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _finish(self, gen: int) -> None:
        with self._lock:
            self.ended = True
            self._streaming_since = None
        self.camera.close()
        log.info("camera %s: end of stream after %d frames", self.camera.source, self.frames)
        self._event("camera_ended", source=self.camera.source, frames=self.frames)
        self._put(_END, gen)

    def _watch(self) -> None:
        interval = min(0.25, self.stall_s / 4)
        while not self._stop.wait(interval):
            with self._lock:
                since = self._streaming_since
                last = self._last_frame_at
                reader = self._reader
            if since is None:
                continue  # not opened yet: the reader retries opening by itself
            now = time.monotonic()
            age = now - max(since, last or since)
            if age <= self.stall_s:
                continue
            self._restart(age, reader)

    def _restart(self, age: float, reader: threading.Thread | None) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._gen += 1
            self.restarts += 1
            self._streaming_since = None
        self._lost(f"no frame for {age:.1f} s")
        log.warning("camera %s stalled for %.1f s: reopening", self.camera.source, age)
        self.camera.close()  # unblocks a mock; a VideoCapture is released by its reader
        if reader is not None:
            reader.join(timeout=1.0)  # a hung native read is abandoned, not waited for
        if not self._stop.is_set():
            self._spawn_reader()
