"""Deterministic 640×480 camera frames with QR codes on a phone screen, for tests and the bench.

A scene is an idle gate background (a wall, a sign, sensor noise, slow lighting drift); a phone
(a dark body with a screen) slides in from the bottom with motion blur, holds a QR code in view
for about a second at 30 fps with a little hand tremor, and slides out again. Each shot can add
the distortions a kiosk camera sees: blur, perspective tilt, a glare blob on the screen, moiré
and noise from filming a display, small and large codes, inverted (dark-mode) codes.

Everything is seeded: the same arguments give the same frames, byte for byte. The default
sequence is built once per process (`default_sequence()`), and `write_video` stores frames as
an MJPG `.avi` for the file-source tests (JPEG loses a little, like a real camera).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import segno

Image = npt.NDArray[np.uint8]

WIDTH, HEIGHT = 640, 480
FPS = 30.0


@dataclass(frozen=True)
class Shot:
    """One code shown to the camera and how it is distorted."""

    payload: str | bytes
    size: int = 180  # side of the symbol in pixels, without the quiet zone
    angle: float = 4.0  # in-plane rotation, degrees
    tilt: float = 0.0  # perspective: 0 flat, 0.3 = the far edge 30 % shorter
    blur: float = 0.0  # Gaussian sigma in pixels over the whole frame
    glare: bool = False  # a bright blob washing out part of the screen
    moire: bool = False  # display interference pattern plus sensor noise
    inverted: bool = False  # light modules on a dark screen
    offset: tuple[int, int] = (0, 0)  # where the code is held, from the frame centre
    error: str = "m"  # QR error-correction level
    hold_frames: int = 30


DISTORTIONS: dict[str, dict[str, object]] = {
    "plain": {},
    "blur": {"blur": 1.6},
    "tilt": {"tilt": 0.35, "angle": 18.0},
    "glare": {"glare": True},
    "moire": {"moire": True},
    "small": {"size": 80, "offset": (-150, -90)},
    "large": {"size": 350, "angle": 2.0},
    "inverted": {"inverted": True},
}
"""Every distortion class a test must decode, as `Shot` keyword arguments."""


def token(index: int, seed: int = 0) -> str:
    """A health-code-like payload: short, printable, unique per index."""
    rng = np.random.default_rng([seed, index])
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    body = "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), 18))
    return f"SHY1.{index:03d}.{body}"


def shot(distortion: str, payload: str | bytes, **overrides: object) -> Shot:
    """A `Shot` of one distortion class, with optional overrides."""
    base = Shot(payload=payload)
    kwargs = {**DISTORTIONS[distortion], **overrides}
    return replace(base, **kwargs)  # type: ignore[arg-type]


def default_shots(seed: int = 0) -> list[Shot]:
    """The bench sequence: every distortion class and a few combinations, distinct payloads."""
    shots = [shot(name, token(i, seed)) for i, name in enumerate(DISTORTIONS)]
    n = len(shots)
    shots += [
        shot("tilt", token(n, seed), blur=1.2),
        shot("small", token(n + 1, seed), moire=True, offset=(170, 60)),
        shot("inverted", token(n + 2, seed), glare=True, angle=-10.0),
        shot("plain", token(n + 3, seed), offset=(60, -40), angle=-25.0),
    ]
    return shots


# -- rendering -------------------------------------------------------------------------------


def code_image(
    payload: str | bytes, size: int, *, error: str = "m", inverted: bool = False
) -> Image:
    """The symbol with a 4-module quiet zone, grayscale, `size` px across the symbol."""
    qr = segno.make(payload, error=error, micro=False)
    modules = np.array(list(qr.matrix_iter(scale=1, border=4)), dtype=np.uint8)
    n_sym = modules.shape[0] - 8
    side = round(size * modules.shape[0] / n_sym)
    dark, light = (235, 28) if inverted else (22, 232)
    img = np.where(modules > 0, dark, light).astype(np.uint8)
    # Nearest-neighbour at a large scale, then area resampling: sub-pixel module edges.
    big = cv2.resize(img, (side * 4, side * 4), interpolation=cv2.INTER_NEAREST)
    return np.asarray(cv2.resize(big, (side, side), interpolation=cv2.INTER_AREA), np.uint8)


def _phone(shot_: Shot) -> tuple[Image, Image]:
    """The phone as a BGR image and its alpha mask (the body is a rounded dark rectangle)."""
    code = code_image(shot_.payload, shot_.size, error=shot_.error, inverted=shot_.inverted)
    side = code.shape[0]
    bezel = max(10, side // 12)
    screen_w = side + 2 * max(8, side // 10)
    screen_h = int(screen_w * 1.7)
    w, h = screen_w + 2 * bezel, screen_h + 2 * bezel
    screen_level = 28 if shot_.inverted else 232
    phone = np.full((h, w, 3), 35, np.uint8)
    phone[bezel : bezel + screen_h, bezel : bezel + screen_w] = (
        screen_level,
        screen_level - 2,
        screen_level - 6,
    )
    top = bezel + (screen_h - side) // 2
    left = bezel + (screen_w - side) // 2
    phone[top : top + side, left : left + side] = code[:, :, None]
    # A header bar and some "app" text above the code, as health-code apps show.
    ink = 200 if shot_.inverted else 60
    cv2.rectangle(phone, (bezel, bezel), (bezel + screen_w, bezel + screen_h // 10), (ink,) * 3, -1)
    cv2.putText(
        phone,
        "HEALTH",
        (bezel + screen_w // 6, top - max(6, side // 12)),
        cv2.FONT_HERSHEY_SIMPLEX,
        max(0.3, side / 260),
        (ink,) * 3,
        max(1, side // 120),
    )
    mask = np.zeros((h, w), np.uint8)
    r = bezel * 2
    cv2.rectangle(mask, (r, 0), (w - r, h), 255, -1)
    cv2.rectangle(mask, (0, r), (w, h - r), 255, -1)
    for cx, cy in ((r, r), (w - r, r), (r, h - r), (w - r, h - r)):
        cv2.circle(mask, (cx, cy), r, 255, -1)
    return phone, mask


def _background(seed: int) -> Image:
    """An idle scene: a wall with a gradient, a door frame and an exit sign."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)[None, :]
    base = 105 + 40 * y + 15 * x
    bg = np.repeat(base[:, :, None], 3, axis=2)
    bg[:, :, 0] += 6  # a slightly blue wall
    img = np.clip(bg, 0, 255).astype(np.uint8)
    cv2.rectangle(img, (30, 20), (250, 470), (70, 75, 80), 8)  # door frame
    cv2.rectangle(img, (430, 30), (600, 90), (40, 140, 40), -1)  # exit sign
    cv2.putText(img, "EXIT", (460, 78), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (235, 240, 235), 3)
    for _ in range(6):  # scuffs on the wall
        cx, cy = int(rng.integers(280, 620)), int(rng.integers(150, 460))
        cv2.circle(img, (cx, cy), int(rng.integers(3, 9)), (90, 95, 100), -1)
    return img


@dataclass
class _Noise:
    """Precomputed sensor noise, cycled (generating noise per frame is slow).

    Each field is split into its positive and negative parts so that adding it is two
    saturating uint8 operations.
    """

    fields: list[tuple[Image, Image]] = field(default_factory=list)

    @classmethod
    def make(cls, seed: int, sigma: float, count: int = 5) -> _Noise:
        rng = np.random.default_rng(seed + 1000)
        out = []
        for _ in range(count):
            n = rng.normal(0, sigma, (HEIGHT, WIDTH, 3)).round()
            out.append((np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)))
        return cls(out)

    def add_to(self, img: Image, i: int) -> Image:
        pos, neg = self.fields[i % len(self.fields)]
        return np.asarray(cv2.subtract(cv2.add(img, pos), neg), np.uint8)


@functools.lru_cache(maxsize=4)
def _noise(seed: int, sigma: float) -> _Noise:
    return _Noise.make(seed, sigma)


def _moire(phone: Image, mask: Image) -> Image:
    """Interference between the display's pixel grid and the sensor: fine slanted fringes."""
    h, w = phone.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = 0.4
    fine = np.sin(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / 4.3)
    beat = 0.6 + 0.4 * np.sin(2 * math.pi * (x - 0.5 * y) / 90.0)
    pattern = 34 * fine * beat * (mask > 0)
    rgb = np.stack([pattern, 0.8 * pattern, 1.1 * pattern], axis=2)
    return np.asarray(np.clip(phone.astype(np.float32) + rgb, 0, 255), np.uint8)


def _glare(shot_: Shot) -> Image:
    """A bright Gaussian blob, as a small BGR patch to add onto the frame."""
    s = shot_.size * 0.25
    r = int(3 * s)
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    blob = 190.0 * np.exp(-(x * x + y * y) / (2 * s * s))
    return np.repeat(blob[:, :, None], 3, axis=2).round().astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _phone_cached(shot_: Shot) -> tuple[Image, Image, Image | None]:
    phone, mask = _phone(shot_)
    if shot_.moire:
        phone = _moire(phone, mask)
    return phone, mask, _glare(shot_) if shot_.glare else None


def _placement(
    shot_: Shot, phone_shape: tuple[int, ...], dx: float, dy: float
) -> npt.NDArray[np.float32]:
    """Where the phone's corners land in the frame: rotate, tilt, translate to the hold point."""
    h, w = phone_shape[:2]
    t = shot_.tilt
    # Tilt: the right edge recedes (shorter), like a phone turned about its vertical axis.
    quad = np.array(
        [
            [-w / 2, -h / 2],
            [w / 2 - t * 0.35 * w, -h / 2 + t * 0.5 * h],
            [w / 2 - t * 0.35 * w, h / 2 - t * 0.5 * h],
            [-w / 2, h / 2],
        ],
        np.float32,
    )
    a = math.radians(shot_.angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], np.float32)
    # The code (not the phone) is centred on the hold point.
    centre = np.array([WIDTH / 2 + shot_.offset[0] + dx, HEIGHT / 2 + shot_.offset[1] + dy])
    return np.asarray(quad @ rot.T + centre, np.float32)


def _compose(
    bg: Image,
    shot_: Shot | None,
    *,
    index: int,
    seed: int,
    dx: float = 0.0,
    dy: float = 0.0,
    motion: int = 0,
) -> Image:
    """One frame: background + drift + noise, the phone (if any) and its distortions."""
    frame = bg.copy()
    sigma = 3.0
    if shot_ is not None:
        phone, mask, glare = _phone_cached(shot_)
        h, w = phone.shape[:2]
        dst = _placement(shot_, phone.shape, dx, dy)
        x0, y0 = np.floor(dst.min(axis=0)).astype(int)
        x1, y1 = np.ceil(dst.max(axis=0)).astype(int)
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, WIDTH), min(y1, HEIGHT)
        if x1 > x0 and y1 > y0:  # some of the phone is in the frame: warp only that box
            src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
            hom = cv2.getPerspectiveTransform(src, dst - np.array([x0, y0], np.float32))
            size = (x1 - x0, y1 - y0)
            warped = cv2.warpPerspective(phone, hom, size, flags=cv2.INTER_LINEAR)
            alpha = cv2.warpPerspective(mask, hom, size, flags=cv2.INTER_LINEAR)
            a = alpha.astype(np.float32) / 255.0
            box = frame[y0:y1, x0:x1]
            frame[y0:y1, x0:x1] = cv2.blendLinear(warped, box, a, 1.0 - a)
        if glare is not None:
            cx = int(WIDTH / 2 + shot_.offset[0] + dx + shot_.size * 0.18)
            cy = int(HEIGHT / 2 + shot_.offset[1] + dy - shot_.size * 0.15)
            r = glare.shape[0] // 2
            gx0, gy0 = max(cx - r, 0), max(cy - r, 0)
            gx1, gy1 = min(cx + r + 1, WIDTH), min(cy + r + 1, HEIGHT)
            if gx1 > gx0 and gy1 > gy0:
                patch = glare[gy0 - (cy - r) : gy1 - (cy - r), gx0 - (cx - r) : gx1 - (cx - r)]
                frame[gy0:gy1, gx0:gx1] = cv2.add(frame[gy0:gy1, gx0:gx1], patch)
        if shot_.moire:
            sigma = 9.0
    out: Any = _noise(seed, sigma).add_to(frame, index)
    drift = round(6.0 * math.sin(2 * math.pi * index / (7 * FPS)))
    if drift > 0:
        out = cv2.add(out, np.full_like(out, drift))
    elif drift < 0:
        out = cv2.subtract(out, np.full_like(out, -drift))
    if shot_ is not None and shot_.blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), shot_.blur)
    if motion > 1:
        out = cv2.blur(out, (1, motion))
    return np.asarray(out, np.uint8)


def code_frame(shot_: Shot, *, index: int = 0, seed: int = 0) -> Image:
    """A single frame with the code held still in view (for unit tests)."""
    return _compose(_background(seed), shot_, index=index, seed=seed)


def idle_frame(*, index: int = 0, seed: int = 0) -> Image:
    """A frame of the empty scene."""
    return _compose(_background(seed), None, index=index, seed=seed)


# -- sequences -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """Where one code is in a sequence: frames [first, last] hold it still in view; from frame
    `visible` on (during the slide-in) the whole symbol is inside the frame."""

    payload: str | bytes
    first: int
    last: int
    label: str
    visible: int = -1


@dataclass(frozen=True)
class FrameSequence:
    """Frames plus the ground truth of which code was shown when."""

    frames: list[Image]
    shown: list[Shown]
    fps: float = FPS

    @property
    def payloads(self) -> set[str | bytes]:
        return {s.payload for s in self.shown}


def make_sequence(
    shots: Sequence[Shot],
    *,
    idle_frames: int = 20,
    slide_in_frames: int = 10,
    slide_out_frames: int = 6,
    seed: int = 0,
    labels: Sequence[str] | None = None,
) -> FrameSequence:
    """Idle, then for each shot: slide in (motion-blurred), hold with tremor, slide out, idle."""
    bg = _background(seed)
    rng = np.random.default_rng(seed + 7)
    frames: list[Image] = []
    shown: list[Shown] = []

    def idle(n: int) -> None:
        for _ in range(n):
            frames.append(_compose(bg, None, index=len(frames), seed=seed))

    idle(idle_frames)
    for k, s in enumerate(shots):
        start_dy = HEIGHT / 2 + s.size * 1.2 + 60  # fully below the frame
        visible = -1
        for i in range(slide_in_frames):
            frac = (i + 1) / (slide_in_frames + 1)
            dy = start_dy * (1 - frac) ** 2  # decelerating
            speed = 2 * start_dy * (1 - frac) / (slide_in_frames + 1)
            if visible < 0 and _inside(s, dy):
                visible = len(frames)
            frames.append(
                _compose(bg, s, index=len(frames), seed=seed, dy=dy, motion=min(15, int(speed / 3)))
            )
        first = len(frames)
        jx = jy = 0.0
        for _ in range(s.hold_frames):
            jx = float(np.clip(jx + rng.normal(0, 0.5), -2, 2))
            jy = float(np.clip(jy + rng.normal(0, 0.5), -2, 2))
            frames.append(_compose(bg, s, index=len(frames), seed=seed, dx=jx, dy=jy))
        label = labels[k] if labels is not None else f"shot{k}"
        visible = first if visible < 0 else visible
        shown.append(Shown(s.payload, first, len(frames) - 1, label, visible))
        for i in range(slide_out_frames):
            frac = (i + 1) / slide_out_frames
            dy = -(HEIGHT / 2 + s.size * 1.2 + 60) * frac**2
            speed = 2 * start_dy * frac / slide_out_frames
            frames.append(
                _compose(
                    bg,
                    s,
                    index=len(frames),
                    seed=seed,
                    dx=jx,
                    dy=dy,
                    motion=min(15, int(speed / 3)),
                )
            )
        idle(idle_frames)
    return FrameSequence(frames, shown)


def _inside(shot_: Shot, dy: float) -> bool:
    """Is the whole symbol (rotated, with its hold offset, moved down by `dy`) in the frame?"""
    a = math.radians(shot_.angle)
    half = shot_.size / 2 * (abs(math.cos(a)) + abs(math.sin(a))) + 2  # + tremor
    cx = WIDTH / 2 + shot_.offset[0]
    cy = HEIGHT / 2 + shot_.offset[1] + dy
    return cx - half >= 0 and cx + half <= WIDTH and cy - half >= 0 and cy + half <= HEIGHT


@functools.lru_cache(maxsize=2)
def default_sequence(seed: int = 0) -> FrameSequence:
    """The bench and test sequence: every distortion class plus combinations (cached)."""
    shots = default_shots(seed)
    labels = [*DISTORTIONS, "tilt+blur", "small+moire", "inverted+glare", "plain-rotated"]
    return make_sequence(shots, seed=seed, labels=labels)


def write_video(frames: Sequence[Image], path: Path, fps: float = FPS) -> Path:
    """Write frames as an MJPG `.avi` that `cv2.VideoCapture` reads back."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise OSError(f"cannot write video {path}")
    try:
        for f in frames:
            writer.write(f)
    finally:
        writer.release()
    return path
