"""QR credentials from the camera: fast per-frame decoding, payload checks, dedupe, a source.

Three layers, one per class:

- `QrDecoder` finds and decodes codes in one frame while doing far less work than decoding
  every full frame, and never reads fewer codes than full-frame decoding would (figures in
  `docs/camera.md` and `bench/RESULTS.md`). The decoders themselves are in `qrbackends`:
  zxing-cpp first where it is installed, pyzbar as the fallback.

  1. grayscale, then an 80×60 thumbnail; a frame that differs little from the last frame that
     was analysed is skipped, unless a code was seen recently, a code-like region is still
     being retried, or `max_skip` frames in a row were skipped;
  2. the whole frame by zxing-cpp, which reads a 640×480 frame in well under a millisecond,
     on every analysed frame, so that a code in view (a venue poster) never hides another;
  3. with pyzbar first instead, the region of interest: where the last code was, expanded,
     decoded first, the way that worked last time (half resolution when it is big enough);
  4. candidate regions: on a half-size image, a 3×3 morphological gradient marks strong
     edges; cells dense with edges (a QR code is mostly edges, a wall is not) that differ from
     a slow background model (a sign on the wall is not decoded again and again) are grouped
     into boxes. With pyzbar first, the boxes are decoded plainly, at full resolution (large
     ones at half), instead of step 2. When a box looks like a code but does not decode and
     the scene holds still, one harder variant is tried per frame, in rotation: contrast-
     limited equalisation (glare, moiré), full resolution for a box decoded at half (and, with
     pyzbar first, the inverted image: zbar does not read light-on-dark codes);
  5. the whole frame by pyzbar, which costs several milliseconds: once a scene with code-like
     regions holds still, and every `full_frame_interval_s` whatever the frame shows. So
     regions and crops only ever add codes to what full-frame decoding reads: a code with a
     thin quiet zone on a dark surround, or one so large its cells do not look like a code,
     is still read.

- `CodeFilter` applies the payload rules (length bound, UTF-8, printable) and the dedupe
  window: the same payload seen again within `dedupe_s` of when it was last seen is the same
  credential. Garbage is dropped and counted, never raised.

- `QrScanner` is a credential source with the `CardReader` shape (`start`, `stop`, `health`,
  `connected`): a `CaptureThread` reads the camera on its own thread, and decoding runs on the
  scanner's consumer thread, never on the asyncio loop. Callbacks are called from that thread.
  OpenCV runs single-threaded once the scanner starts (`opencv_threads`): a frame is small,
  and the pool's spinning workers cost more CPU than they save.

The QR token is opaque and never logged in full: logs carry its length and a short hash.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from device.errors import CameraEnded, NoQrDecoder
from device.sources import qrbackends
from device.sources.camera import Camera, CaptureThread, Frame, SourceEvent
from device.sources.credentials import Credential

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels

_THUMB = (80, 60)
_CELL = 8  # half-resolution pixels per cell: 16×16 frame pixels
# zxing-cpp tries inverted images itself; zbar needs them done for it. (zbar on a box that
# zxing-cpp could not read added no code that its full-frame pass does not, at a third of
# the pipeline's time on the bench sequence: it is not a variant.)
_VARIANTS = ("clahe", "full")
_ZBAR_VARIANTS = ("clahe", "inverted", "full", "inverted_clahe")


def token_digest(data: bytes | str) -> str:
    """What a log line may say about a QR token: a short hash, never the token."""
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:8]


@dataclass(frozen=True)
class Detection:
    """One decoded symbol: raw payload, where it is, and which pass found it."""

    data: bytes
    box: Box
    method: str  # "roi:<variant>", "region:<variant>" or "full:plain" / "full:fallback"


@dataclass(frozen=True)
class _Hint:
    """How the last code was decoded, to try the same way first in the next frame."""

    box: Box
    half: bool
    variant: str
    seen_t: float
    probe_half: bool  # big enough that half resolution may do: try it once


class QrDecoder:
    """Finds and decodes QR codes in a stream of frames, doing as little work as it can."""

    def __init__(
        self,
        *,
        skip_diff: float = 1.5,
        max_skip: int = 10,
        recent_s: float = 0.5,
        retry_frames: int = 8,
        edge_threshold: int = 40,
        cell_density: float = 0.3,
        max_regions: int = 3,
        motion_diff: float = 8.0,
        half_above_px: int = 400,
        probe_half_px: int = 120,
        background_diff: float = 10.0,
        background_rate: float = 0.05,
        clahe: bool = True,
        try_inverted: bool = True,
        backend: qrbackends.Preference = "auto",
        full_frame_interval_s: float = 2.0,
        fallback_interval_s: float = 0.5,
    ) -> None:
        self.skip_diff = skip_diff
        self.max_skip = max_skip
        self.recent_s = recent_s
        self.retry_frames = retry_frames
        self.edge_threshold = edge_threshold
        self.cell_density = cell_density
        self.max_regions = max_regions
        self.motion_diff = motion_diff
        self.half_above_px = half_above_px
        self.probe_half_px = probe_half_px
        self.background_diff = background_diff
        self.background_rate = background_rate
        self.full_frame_interval_s = full_frame_interval_s
        self.fallback_interval_s = fallback_interval_s
        self.backends = qrbackends.chain(backend)
        if not self.backends:
            raise NoQrDecoder("no QR decoder loads: install zxing-cpp, or libzbar0 for pyzbar")
        self._first = self.backends[0]
        self._fallback = self.backends[1] if len(self.backends) > 1 else None
        # zxing-cpp reads a whole 640×480 frame in well under a millisecond: it reads every
        # analysed frame first. zbar takes several: it reads whole frames only by rule.
        self._cheap = self._first if self._first.name == qrbackends.ZXING else None
        self._costly = [b for b in self.backends if b is not self._cheap]
        names = _VARIANTS if self._first.name == qrbackends.ZXING else _ZBAR_VARIANTS
        variants = [v for v in names if clahe or "clahe" not in v]
        self._variants = [v for v in variants if try_inverted or "inverted" not in v]
        self._last_full = -math.inf  # when every decoder last read the full frame
        self._tokens: float = 2.0  # the fallback's budget (_take_fallback_token)
        self._token_t: float | None = None
        self._evidence = False  # this frame has a code-like region that did not decode
        self._clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4))
        self._kernel = np.ones((3, 3), np.uint8)
        self._ref: npt.NDArray[np.float32] | None = None
        self._since_ref = 0
        self._retry = 0
        self._rotation = 0
        self._hint: _Hint | None = None
        self._bg: npt.NDArray[np.float32] | None = None
        self._pending: list[Box] = []
        self.stats: Counter[str] = Counter()

    def reset(self) -> None:
        """Forget the previous frames (after the camera was reopened)."""
        self._ref = None
        self._hint = None
        self._bg = None
        self._pending = []
        self._retry = 0
        self._last_full = -math.inf
        self._tokens, self._token_t = 2.0, None

    @property
    def decoder_names(self) -> str:
        """The decoders in use, for health and logs: 'zxing-cpp 3.1.1, fallback pyzbar 0.1.9'."""
        return qrbackends.describe(self.backends)

    # -- the per-frame ladder ----------------------------------------------------------------
    def decode(self, image: Image, t: float) -> list[Detection]:
        """Codes in this frame; `t` is the frame's time on the source's clock (seconds)."""
        self.stats["frames"] += 1
        gray: Image = (
            image if image.ndim == 2 else np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        )
        thumb = cv2.resize(gray, _THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)
        thumb -= float(thumb.mean())  # slow lighting drift is not a change
        hint = self._hint
        recent = hint is not None and t - hint.seen_t <= self.recent_s
        changed, moving = True, False
        if self._ref is not None:
            diff = float(cv2.norm(thumb, self._ref, cv2.NORM_L1)) / thumb.size
            changed = diff >= self.skip_diff
            moving = diff >= self.motion_diff
            if not changed and not recent and self._retry == 0 and self._since_ref < self.max_skip:
                self._since_ref += 1
                self.stats["skipped"] += 1
                return []
        self._ref = thumb
        self._since_ref = 0
        self.stats["analysed"] += 1
        if moving:  # a scene that comes to rest may have the fallback on its first still frame
            self._tokens = max(self._tokens, 1.0)
        self._evidence = False
        if self._cheap is not None:  # every analysed frame whole: no code can hide another
            found = self._whole(self._cheap, gray, t, "plain")
        else:  # zbar: where the last code was first, the whole frame only by rule (below)
            found = self._at_last_code(gray, t, hint) if recent and hint is not None else []
        if not found:
            found = self._in_regions(gray, t, changed, moving)
        if not found:
            return self._costly_full_frame(gray, t, moving)
        if self._costly and t - self._last_full >= self.full_frame_interval_s:
            # a code in view must not blind the slow decoders to a second one for ever
            # (a code both read counts once: zbar and zxing-cpp may give binary content as
            # different bytes, so "the same" is the same place)
            more = self._costly_full_frame(gray, t, moving)
            found += [d for d in more if not any(_overlap(d.box, f.box) for f in found)]
        return found

    def _at_last_code(self, gray: Image, t: float, hint: _Hint) -> list[Detection]:
        """The area where the last code was, decoded the way that worked last time."""
        roi = self._grow(hint.box, gray.shape)
        if hint.probe_half:
            found = self._decode_box(gray, roi, True, hint.variant)
            if found:
                self.stats["roi_hits"] += 1
                return self._remember(found, t, "roi")
            self._hint = hint = replace(hint, probe_half=False)
        found = self._decode_box(gray, roi, hint.half, hint.variant)
        if found:
            self.stats["roi_hits"] += 1
            return self._remember(found, t, "roi", probe=False)
        return []

    def _in_regions(self, gray: Image, t: float, changed: bool, moving: bool) -> list[Detection]:
        """Codes in the code-like regions of the frame, with a harder variant when still.

        Sets `self._evidence` when a region looked like a code but did not decode.
        """
        boxes, dense = self._regions(gray)
        if self._retry > 0:  # still working on code-like regions the background absorbed
            boxes += [b for b in self._pending if b not in boxes and self._textured(b, dense)]
        if not boxes:
            self._retry = 0
            return []
        self.stats["region_frames"] += 1
        # Harder variants only when the scene holds still: a moving phone is motion-blurred.
        variant = ""
        if self._variants and not moving:
            variant = self._variants[self._rotation % len(self._variants)]
        for box in boxes:
            half = max(box[2], box[3]) > self.half_above_px
            # the cheap decoder already read the whole frame plainly: only variants are new
            found = [] if self._cheap else self._decode_box(gray, box, half, "plain")
            if not found and variant:
                found = self._decode_box(gray, box, half, variant)
            if found:
                return self._remember(found, t, "region")
        self._evidence = True
        # Code-like but undecoded: keep looking at the next frames even if they look the same,
        # with the next variant each time.
        if variant:
            self._rotation += 1
        if self._retry > 0:
            self._retry -= 1
        elif changed:
            self._retry = self.retry_frames
            self._pending = boxes[: self.max_regions]
        return []

    def _costly_full_frame(self, gray: Image, t: float, moving: bool) -> list[Detection]:
        """The whole frame by the decoders too slow to run on every frame (zbar: milliseconds).

        They read it when the frame holds an undecoded code-like region and is not moving (two
        such passes in a row at most, then one per `fallback_interval_s` while the scene stays
        still; a scene that comes to rest after motion gets one at once), and every
        `full_frame_interval_s` whatever the frame shows, a code in view or not: the steady
        rate that catches what the region finder cannot see. With these
        passes, regions and crops only ever add codes to what full-frame decoding reads. (A
        still region is not retried forever: the background model absorbs it within a few
        seconds, and then only the steady rate is left.)
        """
        if not self._costly:
            return []
        due = t - self._last_full >= self.full_frame_interval_s
        still_evidence = self._evidence and not moving and self._take_fallback_token(t)
        if not (due or still_evidence):
            return []
        if due:
            self._last_full = t
        for backend in self._costly:
            variant = "plain" if backend is self._first else "fallback"
            found = self._whole(backend, gray, t, variant)
            if found:
                return found
        return []

    def _take_fallback_token(self, t: float) -> bool:
        """A token bucket: two passes in a row, then one per `fallback_interval_s`, so a
        patterned shirt moving in and out of stillness cannot make zbar read every frame."""
        elapsed = max(0.0, t - self._token_t) if self._token_t is not None else 0.0
        self._token_t = t
        self._tokens = min(2.0, self._tokens + elapsed / self.fallback_interval_s)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _whole(
        self, backend: qrbackends.QrBackend, gray: Image, t: float, variant: str
    ) -> list[Detection]:
        found = self._decode_with(backend, gray, False, variant)
        if not found:
            return []
        self.stats["full_frame_hits"] += 1
        return self._remember(found, t, "full")

    def _remember(
        self, found: list[tuple[Detection, bool, str]], t: float, how: str, *, probe: bool = True
    ) -> list[Detection]:
        det, half, variant = found[0]
        variant = "plain" if variant == "full" else variant  # full resolution is plain now
        probe_half = probe and not half and min(det.box[2], det.box[3]) >= self.probe_half_px
        self._hint = _Hint(det.box, half, variant, t, probe_half)
        self._retry = 0
        self.stats["found_frames"] += 1
        return [Detection(d.data, d.box, f"{how}:{v}") for d, _h, v in found]

    # -- candidate regions -------------------------------------------------------------------
    def _regions(self, gray: Image) -> tuple[list[Box], Image]:
        """Boxes (frame pixels) of cells dense with strong edges that are not background.

        Cells are 16×16 frame pixels. A cell is a candidate when at least `cell_density` of
        its half-resolution pixels are strong edges (3×3 morphological gradient above
        `edge_threshold`) and its brightness differs from the slowly updated background, so a
        sign on the wall or a door frame is not decoded again and again. An opening removes
        one-cell-wide lines (a phone's outline); a dilation joins the cells of one code.
        """
        h, w = gray.shape[:2]
        half = cv2.resize(gray, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        grad = cv2.morphologyEx(half, cv2.MORPH_GRADIENT, self._kernel)
        _, edges = cv2.threshold(grad, self.edge_threshold, 255, cv2.THRESH_BINARY)
        cw, ch = (w // 2) // _CELL, (h // 2) // _CELL
        limit = int(self.cell_density * 255)
        density = cv2.resize(edges, (cw, ch), interpolation=cv2.INTER_AREA)
        _, cells = cv2.threshold(density, limit, 255, cv2.THRESH_BINARY)
        # Large codes (modules of 10+ px) have fewer edges per cell: also look at 2×2 cells.
        coarse = cv2.resize(edges, (cw // 2, ch // 2), interpolation=cv2.INTER_AREA)
        _, coarse = cv2.threshold(coarse, limit, 255, cv2.THRESH_BINARY)
        coarse = cv2.resize(coarse, (cw, ch), interpolation=cv2.INTER_NEAREST)
        cells = dense = cv2.bitwise_or(cells, coarse)
        level = cv2.resize(half, (cw, ch), interpolation=cv2.INTER_AREA).astype(np.float32)
        level -= float(level.mean())
        bg = self._bg
        if bg is None or bg.shape != level.shape:
            self._bg = level
        else:
            moved = (np.abs(level - bg) > self.background_diff).astype(np.uint8) * 255
            cells = cv2.bitwise_and(cells, cv2.dilate(moved, self._kernel))
            cv2.accumulateWeighted(level, bg, self.background_rate)
        cells = cv2.morphologyEx(cells, cv2.MORPH_OPEN, self._kernel)
        cells = cv2.dilate(cells, self._kernel)  # join the cells of one code, add a margin
        n, _labels, stats, _c = cv2.connectedComponentsWithStats(cells, connectivity=8)
        scale = 2 * _CELL
        boxes: list[tuple[int, Box]] = []
        for i in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[i])
            boxes.append((area, (x * scale, y * scale, bw * scale, bh * scale)))
        boxes.sort(reverse=True)
        grown = [self._grow(b, gray.shape, 0.1, 0) for _a, b in boxes[: self.max_regions]]
        return grown, np.asarray(dense, np.uint8)

    @staticmethod
    def _textured(box: Box, dense: Image) -> bool:
        """Does `box` (frame pixels) still hold at least 3×3 cells dense with edges?"""
        scale = 2 * _CELL
        x, y, w, h = box
        part = dense[y // scale : (y + h) // scale + 1, x // scale : (x + w) // scale + 1]
        return int(np.count_nonzero(part)) >= 9

    @staticmethod
    def _grow(box: Box, shape: tuple[int, ...], frac: float = 0.12, pad: int = 12) -> Box:
        """`box` enlarged by `frac` of its size plus `pad` pixels each side, clipped."""
        x, y, w, h = box
        dx, dy = int(w * frac) + pad, int(h * frac) + pad
        x0, y0 = max(0, x - dx), max(0, y - dy)
        x1, y1 = min(shape[1], x + w + dx), min(shape[0], y + h + dy)
        return x0, y0, x1 - x0, y1 - y0

    # -- decoding one box --------------------------------------------------------------------
    def _decode_box(
        self, gray: Image, box: Box, half: bool, variant: str
    ) -> list[tuple[Detection, bool, str]]:
        x, y, w, h = box
        if w < 16 or h < 16:
            return []
        crop: Any = gray[y : y + h, x : x + w]
        if variant == "full":
            if not half:
                return []
            half = False
        scale = 1
        if half:
            crop = cv2.resize(crop, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            scale = 2
        if "clahe" in variant:
            crop = self._clahe.apply(crop)
        if "inverted" in variant:
            crop = cv2.bitwise_not(crop)
        found = self._decode_with(self._first, np.ascontiguousarray(crop), half, variant)
        return [(replace(d, box=_scaled(d.box, scale, x, y)), hf, v) for d, hf, v in found]

    def _decode_with(
        self, backend: qrbackends.QrBackend, image: Image, half: bool, variant: str
    ) -> list[tuple[Detection, bool, str]]:
        """`backend` on `image`; a backend that raises is counted and its fallback used."""
        self.stats[f"{backend.name}_calls"] += 1
        self.stats[f"{backend.name}_pixels"] += image.shape[0] * image.shape[1]
        try:
            symbols = backend.decode(image)
        except Exception as exc:  # a decoder bug on one odd image must not cost the code
            self.stats[f"{backend.name}_errors"] += 1
            if self.stats[f"{backend.name}_errors"] in (1, 10, 100) or not (
                self.stats[f"{backend.name}_errors"] % 1000
            ):  # a decoder failing on every frame must not log 15 lines a second
                log.warning(
                    "qr decoder %s failed (%d times so far): %s",
                    backend.name,
                    self.stats[f"{backend.name}_errors"],
                    type(exc).__name__,
                )
            fallback = self._fallback
            if fallback is None or backend is fallback:
                return []
            return self._decode_with(fallback, image, half, "fallback")
        return [(Detection(sym.data, sym.box, variant), half, variant) for sym in symbols]


def _overlap(a: Box, b: Box) -> bool:
    """Do two boxes share any pixel?"""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _scaled(box: Box, scale: int, x: int, y: int) -> Box:
    """A box found in a (possibly half-size) crop, in frame pixels."""
    left, top, w, h = box
    return x + left * scale, y + top * scale, w * scale, h * scale


# -- payload rules and dedupe ----------------------------------------------------------------


class CodeFilter:
    """Payload checks and the dedupe window; rejections are counted by reason."""

    def __init__(self, *, dedupe_s: float = 3.0, max_payload: int = 1024) -> None:
        self.dedupe_s = dedupe_s
        self.max_payload = max_payload
        self._seen: dict[bytes, float] = {}
        self.accepted = 0
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()

    def check(self, data: bytes, t: float) -> tuple[str | None, str]:
        """(text, "accepted") for a new valid code, else (None, reason).

        Reasons: "duplicate" (seen within the window), "too_long", "not_utf8",
        "not_printable", "empty". A rejected code is also deduplicated, so one bad code held in
        view is counted once.
        """
        last = self._seen.get(data)
        self._seen[data] = t
        if len(self._seen) > 256:
            self._prune(t)
        if last is not None and t - last <= self.dedupe_s:
            self.duplicates += 1
            return None, "duplicate"
        reason = self._invalid(data)
        if reason:
            self.rejected[reason] += 1
            return None, reason
        self.accepted += 1
        return data.decode("utf-8"), "accepted"

    def _invalid(self, data: bytes) -> str:
        if not data:
            return "empty"
        if len(data) > self.max_payload:
            return "too_long"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return "not_utf8"
        if not text.isprintable():
            return "not_printable"
        return ""

    def _prune(self, now: float) -> None:
        for key in [k for k, seen in self._seen.items() if now - seen > self.dedupe_s]:
            del self._seen[key]


# -- the credential source -------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """A code that passed the filter: the source frame, the text and what it cost."""

    frame: int
    text: str
    decode_ms: float
    completed_at: float  # time.monotonic() when decoded


class QrScanner:
    """Camera credential source: capture thread → decoder thread → one credential per code."""

    def __init__(
        self,
        camera: Camera,
        *,
        dedupe_s: float = 3.0,
        max_payload: int = 1024,
        queue_size: int = 2,
        stall_s: float = 3.0,
        reopen_interval_s: float = 1.0,
        decoder: QrDecoder | None = None,
        opencv_threads: int | None = 1,
    ) -> None:
        self.camera = camera
        self.opencv_threads = opencv_threads
        self.decoder = decoder or QrDecoder()
        self.filter = CodeFilter(dedupe_s=dedupe_s, max_payload=max_payload)
        self.capture = CaptureThread(
            camera,
            queue_size=queue_size,
            stall_s=stall_s,
            reopen_interval_s=reopen_interval_s,
            on_event=self._capture_event,
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_credential: Callable[[Credential], None] | None = None
        self._on_event: SourceEvent | None = None
        self._decode_times: collections.deque[float] = collections.deque(maxlen=60)
        self._decode_ms_total = 0.0
        self._decoded = 0
        self._reset_pending = False
        self.last_decode_ms: float | None = None
        self.errors: Counter[str] = Counter()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while the camera delivers frames."""
        return self.capture.connected

    def start(
        self, on_credential: Callable[[Credential], None], on_event: SourceEvent | None = None
    ) -> None:
        self._on_credential = on_credential
        self._on_event = on_event
        self._stop.clear()
        if self.opencv_threads is not None:
            # OpenCV's own thread pool buys nothing on 640×480 frames and costs CPU: its
            # workers spin-wait after every small resize or morphology call, which at 15 fps
            # doubled the decoder's CPU (1.9 vs 1.0 ms a frame, bench/RESULTS.md "Kiosk
            # resources"). The setting is the process's; the agent uses OpenCV only here.
            cv2.setNumThreads(self.opencv_threads)
        self.capture.start()
        self._thread = threading.Thread(target=self._run, name="qr-decode", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.capture.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the decoder thread to finish (a file source that ended); True if it did."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def health(self) -> dict[str, Any]:
        """Capture health plus what the decoder did."""
        out = self.capture.health()
        with self._lock:
            times = list(self._decode_times)
            decoded = self._decoded
            out.update(
                {
                    "decoder": self.decoder.decoder_names,
                    "decode_fps": (
                        round((len(times) - 1) / (times[-1] - times[0]), 1)
                        if len(times) > 1 and times[-1] > times[0]
                        else None
                    ),
                    "decoded_frames": decoded,
                    "skipped_frames": self.decoder.stats["skipped"],
                    "avg_decode_ms": (
                        round(self._decode_ms_total / decoded, 2) if decoded else None
                    ),
                    "last_decode_ms": (
                        round(self.last_decode_ms, 2) if self.last_decode_ms is not None else None
                    ),
                    "codes": self.filter.accepted,
                    "duplicates": self.filter.duplicates,
                    "rejected": dict(self.filter.rejected),
                    "decode_errors": dict(self.errors)
                    | {k: v for k, v in self.decoder.stats.items() if k.endswith("_errors")},
                }
            )
        return out

    # -- the work ----------------------------------------------------------------------------
    def process(self, frame: Frame) -> list[Accepted]:
        """Decode one frame and apply the filter (runs on the caller's thread)."""
        if self._reset_pending:
            self._reset_pending = False
            self.decoder.reset()
        start = time.perf_counter()
        try:
            found = self.decoder.decode(frame.image, frame.t)
        except Exception as exc:  # a decoder bug or a malformed frame must not stop the camera
            with self._lock:
                self.errors[type(exc).__name__] += 1
            log.exception("qr decoding failed on frame %d", frame.index)
            return []
        completed_at = time.monotonic()
        decode_ms = (time.perf_counter() - start) * 1000
        with self._lock:
            self._decoded += 1
            self._decode_ms_total += decode_ms
            self.last_decode_ms = decode_ms
            self._decode_times.append(completed_at)
        out = []
        for det in found:
            text, why = self.filter.check(det.data, frame.t)
            if text is None:
                if why != "duplicate":
                    log.info(
                        "qr code rejected: %s (%d bytes, #%s)",
                        why,
                        len(det.data),
                        token_digest(det.data),
                    )
                    self._event("qr_rejected", reason=why, length=len(det.data))
                continue
            log.info("qr code accepted (%d bytes, #%s)", len(det.data), token_digest(det.data))
            out.append(Accepted(frame.index, text, decode_ms, completed_at))
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.capture.get(timeout=0.2)
            except CameraEnded:
                return
            if frame is None:
                continue
            for acc in self.process(frame):
                if self._on_credential is None:
                    continue
                cred = Credential(
                    kind="qr",
                    id_number="",
                    completed_at=acc.completed_at,
                    source="camera",
                    token=acc.text,
                )
                try:
                    self._on_credential(cred)
                except Exception:
                    log.exception("credential handler failed")

    def _capture_event(self, what: str, detail: dict[str, Any]) -> None:
        if what == "camera_ready":  # on the capture thread: the decoder resets on its own
            self._reset_pending = True
        self._event(what, **detail)

    def _event(self, what: str, **detail: Any) -> None:
        if self._on_event is not None:
            try:
                self._on_event(what, detail)
            except Exception:
                log.exception("camera event handler failed")
