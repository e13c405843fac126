"""A real-image QR corpus of our own: codes rendered as a kiosk camera would see them.

Issue 15 measured the camera pipeline on 137 real photos (phone and monitor screens, paper,
damaged, rotated, inverted, mirrored, small codes, thin quiet zones on dark surrounds) and
found it read fewer than naive full-frame pyzbar. This module rebuilds such a corpus from
nothing but segno and OpenCV, so the tests and `bench/qr_pipeline.py` can measure every
decoder on the same images without fetching anything.

Each image is a scene: a surface (a phone with status bar and app chrome, a printed and
photographed sheet of paper, or a terminal window) carrying one code, placed in a cluttered
room by a pinhole-camera pose (roll, yaw, pitch), then passed through a camera model (glare,
uneven light, moiré, defocus and motion blur, selfie mirroring, exposure gain, sensor noise,
JPEG). Every category holds easy, medium and hard instances (three of each), so the
per-category rates tell decoders apart instead of all reading everything.

Everything is seeded: `corpus(seed)` gives the same images, byte for byte, and is built once
per process. Payloads are health-code-like URLs, tokens and signed tokens, unique per image,
some with Chinese text.

    python -m tests.device.qrcorpus --write DIR   # PNG files (the JPEG category as .jpg)
    python -m tests.device.qrcorpus --table       # per-category reads: pipeline/naive/zxing
"""

from __future__ import annotations

import argparse
import base64
import functools
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import segno

Image = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]

PER_CATEGORY = 9  # three easy, three medium, three hard instances
CATEGORIES = (
    "phone_screen",
    "printed_photo",
    "glare",
    "perspective",
    "blur",
    "jpeg",
    "low_light",
    "mirrored",
    "thin_quiet_zone",
    "inverted",
    "moire",
    "small",
    "dense",
    "rotated",
    "damaged",
)
DECODERS = ("pipeline", "naive", "zxing")


@dataclass(frozen=True)
class CorpusImage:
    """One corpus image and the text its code holds."""

    category: str
    name: str
    text: str
    image: Image  # BGR uint8


@dataclass(frozen=True)
class Spec:
    """How one image is made: the code, the surface it is on, the pose and the camera."""

    category: str
    name: str
    text: str
    seed: int
    error: str = "m"  # QR error-correction level
    version: int | None = None  # None: the smallest that fits
    module: float = 5.0  # module size in frame pixels, at the code's centre
    border: int = 4  # quiet zone, in modules
    surface: str = "phone"  # "phone", "paper" or "terminal"
    inverted: bool = False  # light modules on dark (a phone's dark mode, a negative print)
    brightness: float = 1.0  # screen backlight, 0..1
    roll: float = 0.0  # in-plane rotation, degrees
    yaw: float = 0.0  # turned about the vertical axis, degrees
    pitch: float = 0.0  # tipped about the horizontal axis, degrees
    offset: tuple[float, float] = (0.0, 0.0)  # code centre from the frame centre, pixels
    curl: float = 0.0  # paper curl, 0..1
    shadow: float = 0.0  # depth of a soft shadow edge across the scene, 0..1
    uneven: float = 0.15  # light falloff across the frame, 0..1
    glare: float = 0.0  # peak of the specular blob, 0..255
    glare_size: float = 0.25  # its radius as a fraction of the code side
    moire: float = 0.0  # fringe amplitude, grey levels
    defocus: float = 0.6  # Gaussian sigma, pixels (0.6: a sharp lens)
    motion: int = 0  # motion-blur length, pixels
    gain: float = 1.0  # exposure: < 1 is a dark scene
    noise: float = 2.0  # sensor noise sigma at gain 1
    jpeg: int = 0  # JPEG quality, 0 = stored lossless
    mirrored: bool = False  # a front camera's selfie mirroring
    damage: str = ""  # "finger", "scratch" or "stain"
    damage_size: float = 0.0  # fraction of the code side covered
    line_gaps: bool = False  # a terminal's dark gaps between character rows
    frame: tuple[int, int] = (640, 480)  # width, height


# -- payloads ---------------------------------------------------------------------------------

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _chars(rng: np.random.Generator, n: int, alphabet: str = _ALPHABET) -> str:
    return "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), n))


def payload(kind: str, index: int, rng: np.random.Generator, length: int = 0) -> str:
    """A health-code-like payload, unique per `index` (the index is part of it).

    Kinds: "url" (a verification URL), "token" (a short kiosk token), "signed" (a signed
    token: base64url header, claims and signature), "chinese" (Chinese text around a token),
    "long" (a URL carrying a signed token, padded to about `length` characters).
    """
    tag = f"{index:03d}"
    if kind == "url":
        return f"https://hc.example.gov.cn/v2/pass?c={tag}{_chars(rng, 16)}&s={_chars(rng, 6)}"
    if kind == "token":
        return f"SHY1.{tag}.{_chars(rng, 18)}"
    if kind == "chinese":
        return f"健康码 绿码 核验{tag} 有效 {_chars(rng, 10)}"
    header = base64.urlsafe_b64encode(b'{"alg":"ES256","kid":"hc1"}').decode().rstrip("=")
    if kind == "signed":
        claims = f'{{"n":"{tag}","st":"G","exp":{1790000000 + index}}}'
        body = base64.urlsafe_b64encode(claims.encode()).decode().rstrip("=")
        return f"HC1:{header}.{body}.{_chars(rng, 43, _B64)}"
    if kind == "long":
        prefix = f"https://hc.example.gov.cn/v2/verify?n={tag}&t={header}."
        return prefix + _chars(rng, max(8, length - len(prefix)), _B64)
    raise ValueError(f"unknown payload kind {kind!r}")


# -- the code and the surfaces ----------------------------------------------------------------


def _modules(spec: Spec) -> npt.NDArray[np.bool_]:
    """The symbol's dark modules, quiet zone included."""
    # A fixed mask per image: segno's mask scoring costs more than the rest of the render.
    qr = segno.make(
        spec.text,
        error=spec.error,
        version=spec.version,
        mask=spec.seed % 8,
        micro=False,
        boost_error=False,
    )
    return np.array(list(qr.matrix_iter(scale=1, border=spec.border)), dtype=bool)


def clean_code(spec: Spec, module_px: int = 6) -> Image:
    """The bare symbol, black on white with a 4-module quiet zone: what the text renders to."""
    mods = _modules(replace(spec, border=4))
    img = np.where(mods, 0, 255).astype(np.uint8)
    return np.asarray(np.kron(img, np.ones((module_px, module_px), np.uint8)), np.uint8)


def _code_raster(mods: npt.NDArray[np.bool_], k: int, dark: int, light: int) -> Image:
    img = np.where(mods, dark, light).astype(np.uint8)
    return np.asarray(np.kron(img, np.ones((k, k), np.uint8)), np.uint8)


@dataclass
class _Sheet:
    """A surface in its own pixels: colour, opacity, where the code is, the screen area."""

    image: Image  # BGR
    mask: Image  # 255 where the surface is
    code: tuple[int, int, int]  # x, y, side (quiet zone included), sheet pixels
    screen: Image | None = None  # 255 over a display (moiré lives there)


def _text(
    img: Image, s: str, org: tuple[int, int], scale: float, colour: int | tuple[int, ...]
) -> None:
    c = (colour,) * 3 if isinstance(colour, int) else colour
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, c, max(1, round(scale * 2)))


def _rounded(mask: Image, x0: int, y0: int, x1: int, y1: int, r: int) -> None:
    cv2.rectangle(mask, (x0 + r, y0), (x1 - r, y1), 255, -1)
    cv2.rectangle(mask, (x0, y0 + r), (x1, y1 - r), 255, -1)
    for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
        cv2.circle(mask, (cx, cy), r, 255, -1)


def _phone(spec: Spec, mods: npt.NDArray[np.bool_], k: int, rng: np.random.Generator) -> _Sheet:
    """A phone showing a health-code app: bezel, status bar, header, card, status pill."""
    side = mods.shape[0] * k
    sw = int(side * 1.3)
    sh = int(sw * 2.05)
    bezel = max(6, sw // 22)
    w, h = sw + 2 * bezel, sh + 2 * bezel
    img = np.full((h, w, 3), 28, np.uint8)
    dark_mode = spec.inverted
    bg = 16 if dark_mode else 242
    fg = 225 if dark_mode else 30
    scr = np.full((sh, sw, 3), bg, np.uint8)
    f = sw / 400  # text scale
    status = int(sh * 0.035)
    _text(scr, "9:41", (int(sw * 0.05), int(status * 0.8)), 0.5 * f, fg)
    cv2.rectangle(
        scr, (int(sw * 0.85), status // 4), (int(sw * 0.94), status * 3 // 4), (fg,) * 3, 2
    )
    colours = [(70, 160, 40), (190, 120, 30), (60, 140, 230)]
    header = colours[int(rng.integers(0, len(colours)))]
    cv2.rectangle(scr, (0, status), (sw, status + int(sh * 0.08)), header, -1)
    _text(scr, "Health Code", (int(sw * 0.28), status + int(sh * 0.055)), 0.9 * f, 250)
    top = status + int(sh * 0.16)
    _text(
        scr,
        f"Zhang * {int(rng.integers(10, 99))}",
        (int(sw * 0.32), top - int(sh * 0.03)),
        0.7 * f,
        fg,
    )
    left = (sw - side) // 2
    dark, light = (215, 16) if dark_mode else (20, 250)
    scr[top : top + side, left : left + side] = _code_raster(mods, k, dark, light)[:, :, None]
    y = top + side + int(sh * 0.05)
    cv2.rectangle(scr, (int(sw * 0.3), y), (int(sw * 0.7), y + int(sh * 0.05)), header, -1)
    _text(scr, "2026-11-28 09:41:07", (int(sw * 0.2), y + int(sh * 0.1)), 0.6 * f, fg)
    cv2.rectangle(
        scr,
        (int(sw * 0.1), sh - int(sh * 0.09)),
        (int(sw * 0.9), sh - int(sh * 0.04)),
        (fg,) * 3,
        2,
    )
    # Backlight: the panel's black stays a little lit, its white dims with the brightness.
    level = 0.25 + 0.75 * spec.brightness
    scr = np.asarray(cv2.convertScaleAbs(scr, alpha=level, beta=8), np.uint8)
    img[bezel : bezel + sh, bezel : bezel + sw] = scr
    mask = np.zeros((h, w), np.uint8)
    _rounded(mask, 0, 0, w - 1, h - 1, bezel * 4)
    screen = np.zeros((h, w), np.uint8)
    screen[bezel : bezel + sh, bezel : bezel + sw] = 255
    return _Sheet(img, mask, (bezel + left, bezel + top, side), screen)


def _paper(spec: Spec, mods: npt.NDArray[np.bool_], k: int, rng: np.random.Generator) -> _Sheet:
    """A printed notice: textured off-white paper, ink with dot gain, a title, curl."""
    side = mods.shape[0] * k
    w, h = int(side * 1.5), int(side * 1.75)
    blotch = cv2.resize(
        rng.normal(0, 6, (8, 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    paper = np.asarray(cv2.convertScaleAbs(blotch + _noise_field((w, h), rng) * 4, beta=228))
    ink, blank = (235, 40) if spec.inverted else (38, 235)
    code = _code_raster(mods, k, ink, blank)
    code = np.asarray(
        cv2.GaussianBlur(code, (0, 0), 0.25 * k), np.uint8
    )  # dot gain: ink spreads a little
    left, top = (w - side) // 2, int(h * 0.2)
    region = paper[top : top + side, left : left + side]
    region[:] = code if spec.inverted else np.minimum(region, code)
    # Off-white, a little warm: blue below green below red.
    blue = cv2.subtract(paper, np.full_like(paper, 6))
    red = cv2.add(paper, np.full_like(paper, 4))
    img = np.asarray(cv2.merge([blue, paper, red]), np.uint8)
    f = w / 500
    _text(img, "SCAN AT THE GATE", (int(w * 0.12), int(h * 0.1)), 1.1 * f, 45)
    _text(img, f"Pass no. {spec.name[-3:]}", (int(w * 0.3), int(h * 0.93)), 0.8 * f, 60)
    mask = np.full((h, w), 255, np.uint8)
    sheet = _Sheet(img, mask, (left, top, side))
    return _curl(sheet, spec.curl) if spec.curl > 0 else sheet


def _curl(sheet: _Sheet, amount: float) -> _Sheet:
    """Bend the paper: the middle bows toward the camera, the edges roll away and darken."""
    h, w = sheet.mask.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u = x / w * 2 - 1  # -1..1 across
    map_x = x + amount * w * 0.06 * np.sin(u * math.pi)
    map_y = y + amount * h * 0.05 * (1 - u * u) * (y / h * 2 - 1) + amount * h * 0.02 * u * u
    img = cv2.remap(sheet.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    shade = (1 - amount * 0.35 * u**4)[:, :, None]
    img = np.asarray(np.clip(img * shade, 0, 255), np.uint8)
    mask = cv2.remap(sheet.mask, map_x, map_y, cv2.INTER_LINEAR)
    return _Sheet(np.asarray(img, np.uint8), np.asarray(mask, np.uint8), sheet.code)


def _terminal(spec: Spec, mods: npt.NDArray[np.bool_], k: int, rng: np.random.Generator) -> _Sheet:
    """A terminal window printing a code with block characters, on a monitor."""
    side = mods.shape[0] * k
    w, h = int(side * 1.9), int(side * 1.6)
    bg = 24
    img = np.full((h, w, 3), bg, np.uint8)
    bar = max(8, h // 20)
    cv2.rectangle(img, (0, 0), (w, bar), (58, 58, 58), -1)
    for i, c in enumerate(((80, 90, 230), (60, 190, 230), (80, 200, 90))):
        cv2.circle(img, (bar // 2 + i * bar, bar // 2), bar // 3, c, -1)
    f = w / 700
    top = bar + int(h * 0.08)
    _text(
        img,
        f"$ hcpass show --qr {int(rng.integers(100, 999))}",
        (int(w * 0.03), top - int(h * 0.025)),
        0.7 * f,
        (120, 210, 120),
    )
    left = int(w * 0.08)
    code = _code_raster(mods, k, bg, 228)
    if spec.line_gaps:  # the font's line spacing: a dark gap under every row of half blocks
        for y0 in range(2 * k - 1, code.shape[0], 2 * k):
            code[y0 : y0 + max(1, k // 4)] = np.minimum(code[y0 : y0 + max(1, k // 4)], 70)
    img[top : top + side, left : left + side] = code[:, :, None]
    for i in range(6):  # log lines beside the code
        y = top + int(side * 0.1) + i * int(side * 0.12)
        _text(img, _chars(rng, 12).lower(), (left + side + int(w * 0.04), y), 0.55 * f, 150)
    mask = np.full((h, w), 255, np.uint8)
    return _Sheet(img, mask, (left, top, side), mask.copy())


_SURFACES: dict[str, Callable[[Spec, npt.NDArray[np.bool_], int, np.random.Generator], _Sheet]] = {
    "phone": _phone,
    "paper": _paper,
    "terminal": _terminal,
}


def _damage(sheet: _Sheet, spec: Spec, rng: np.random.Generator) -> None:
    """Cover part of the code: a fingertip from the lower right, a scratch, or a stain."""
    x, y, side = sheet.code
    img = sheet.image
    d = spec.damage_size * side
    if spec.damage == "finger":  # a fingertip reaching `d` into the code from the right
        a = math.radians(float(rng.uniform(-35, 15)))
        half_w, length = int(side * 0.22), int(side * 0.9)
        tip = (x + side - d, y + side * float(rng.uniform(0.35, 0.75)))
        centre = (int(tip[0] + length * math.cos(a)), int(tip[1] + length * math.sin(a)))
        angle = math.degrees(a)
        cv2.ellipse(img, centre, (length, half_w), angle, 0, 360, (118, 148, 200), -1)
        nail = (int(tip[0] + half_w * 0.9 * math.cos(a)), int(tip[1] + half_w * 0.9 * math.sin(a)))
        cv2.ellipse(
            img, nail, (int(half_w * 0.7), int(half_w * 0.6)), angle, 0, 360, (160, 175, 220), -1
        )
    elif spec.damage == "scratch":
        for _ in range(1 + int(spec.damage_size * 8)):  # light scuffs, each ~half the code
            x0, y0 = x + side * rng.uniform(0.1, 0.6, 2)[0], y + side * rng.uniform(0.1, 0.9)
            a = rng.uniform(-0.6, 0.6)
            p0 = (int(x0), int(y0))
            p1 = (int(x0 + side * 0.5 * math.cos(a)), int(y0 + side * 0.5 * math.sin(a)))
            cv2.line(img, p0, p1, (245, 245, 245), max(2, int(side * 0.012)))
    elif spec.damage == "stain":
        cx, cy = x + int(side * 0.62), y + int(side * 0.6)
        cv2.circle(img, (cx, cy), int(d * 0.6), (90, 110, 130), -1)


# -- the room and the camera ------------------------------------------------------------------


def _background(size: tuple[int, int], rng: np.random.Generator) -> Floats:
    """A counter in front of a wall: gradients, a door frame, a notice, a cable."""
    w, h = size
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    wall = float(rng.uniform(90, 150))
    base = wall + 35 * y + float(rng.uniform(-20, 20)) * x
    img = np.repeat(base[:, :, None], 3, axis=2)
    img[:, :, 0] += float(rng.uniform(-8, 8))
    img[int(h * 0.72) :, :] *= 0.6  # the counter top
    img = np.ascontiguousarray(img, np.float32)
    for _ in range(4):
        x0, y0 = int(rng.uniform(0, w * 0.9)), int(rng.uniform(0, h * 0.7))
        c = tuple(float(v) for v in rng.uniform(40, 220, 3))
        cv2.rectangle(img, (x0, y0), (x0 + int(w * 0.12), y0 + int(h * 0.1)), c, -1)
    cv2.rectangle(
        img, (int(w * 0.05), int(h * 0.03)), (int(w * 0.35), h), (70, 74, 80), max(2, w // 80)
    )
    cv2.line(img, (0, int(h * 0.9)), (w, int(h * 0.8)), (30, 30, 30), 3)
    return img


def _pose(spec: Spec, sheet: _Sheet, k: int) -> Floats:
    """Where the sheet's corners land in the frame: a pinhole camera looking at the surface.

    The surface is first scaled so a module is `spec.module` pixels at the code's centre,
    rotated in its plane (roll), turned (yaw) and tipped (pitch) about the code's centre,
    and projected with a focal length of one frame width.
    """
    h, w = sheet.mask.shape
    x, y, side = sheet.code
    centre = np.array([x + side / 2, y + side / 2], np.float32)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32) - centre
    pts = corners * (spec.module / k)
    r, yw, p = (math.radians(a) for a in (spec.roll, spec.yaw, spec.pitch))
    roll = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]], np.float32)
    pts = pts @ roll.T
    fw, fh = spec.frame
    focal = float(fw)
    p3 = np.column_stack([pts, np.zeros(4, np.float32)])
    ry = np.array([[math.cos(yw), 0, math.sin(yw)], [0, 1, 0], [-math.sin(yw), 0, math.cos(yw)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    p3 = p3 @ (rx @ ry).T
    depth = focal + p3[:, 2]
    uv = p3[:, :2] * (focal / depth)[:, None]
    target = np.array([fw / 2 + spec.offset[0], fh / 2 + spec.offset[1]], np.float32)
    return np.asarray(uv + target, np.float32)


def _place(frame: Floats, sheet: _Sheet, dst: Floats) -> tuple[Floats, Floats]:
    """Warp the sheet into the frame; also returns the screen's coverage (0..1) per pixel.

    Only the box the sheet lands in is warped and blended: a small code costs little.
    """
    h, w = sheet.mask.shape
    fh, fw = frame.shape[:2]
    x0, y0 = np.maximum(np.floor(dst.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(dst.max(axis=0)).astype(int), (fw, fh))
    screen = np.zeros((fh, fw), np.float32)
    if x1 <= x0 or y1 <= y0:
        return frame, screen
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    hom = cv2.getPerspectiveTransform(src, dst - np.array([x0, y0], np.float32))
    size = (int(x1 - x0), int(y1 - y0))
    warped = cv2.warpPerspective(sheet.image, hom, size, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(sheet.mask, hom, size, flags=cv2.INTER_LINEAR)
    a = alpha.astype(np.float32) / 255.0
    box = frame[y0:y1, x0:x1]
    box[:] = cv2.blendLinear(warped.astype(np.float32), box, a, 1.0 - a)
    if sheet.screen is not None:
        cover = cv2.warpPerspective(sheet.screen, hom, size, flags=cv2.INTER_LINEAR)
        screen[y0:y1, x0:x1] = cover.astype(np.float32) / 255.0
    return frame, screen


@functools.cache
def _noise_bank(size: tuple[int, int], channels: int) -> Floats:
    """Unit Gaussian noise a little larger than `size`; images take shifted crops of it.

    Drawing fresh noise for every image cost a third of the corpus's generation time.
    """
    w, h = size
    rng = np.random.default_rng([w, h, channels])
    bank = rng.standard_normal((h + 97, w + 89, channels), dtype=np.float32)
    bank.setflags(write=False)
    return bank


def _noise_field(size: tuple[int, int], rng: np.random.Generator, channels: int = 1) -> Floats:
    """A (h, w[, channels]) unit-noise field: a seeded crop (and flip) of a shared bank."""
    w, h = size
    bank = _noise_bank((-(-w // 640) * 640, -(-h // 480) * 480), channels)
    y0, x0 = (
        int(rng.integers(0, bank.shape[0] - h + 1)),
        int(rng.integers(0, bank.shape[1] - w + 1)),
    )
    field = bank[y0 : y0 + h, x0 : x0 + w]
    if rng.integers(0, 2):
        field = field[::-1]
    return field if channels > 1 else field[:, :, 0]


@functools.cache
def _grid(size: tuple[int, int]) -> tuple[Floats, Floats]:
    """Pixel coordinates of a frame (x, y), shared: the same few frame sizes recur."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _light(
    img: Floats, spec: Spec, code_centre: Floats, code_px: float, rng: np.random.Generator
) -> Floats:
    """Uneven light, a shadow edge and a specular glare blob, in scene radiance."""
    fw, fh = spec.frame
    x, y = _grid(spec.frame)
    a = float(rng.uniform(0, 2 * math.pi))
    ramp = ((x - fw / 2) * math.cos(a) + (y - fh / 2) * math.sin(a)) / max(fw, fh)
    light = 1.0 + spec.uneven * ramp * 1.6
    if spec.shadow > 0:  # a soft shadow edge (a hand, the kiosk's hood) through the code
        b = a + math.pi / 2
        d = (x - code_centre[0]) * math.cos(b) + (y - code_centre[1]) * math.sin(b)
        light = light * (1 - spec.shadow / (1 + np.exp(-d / (0.05 * code_px))))
    out = img * light[:, :, None]
    if spec.glare > 0:
        gx = code_centre[0] + float(rng.uniform(-0.2, 0.2)) * code_px
        gy = code_centre[1] + float(rng.uniform(-0.2, 0.2)) * code_px
        s = spec.glare_size * code_px
        blob = spec.glare * np.exp(-((x - gx) ** 2 + ((y - gy) * 1.4) ** 2) / (2 * s * s))
        out = out + blob[:, :, None]
    return np.asarray(out, np.float32)


def _moire(img: Floats, screen: Floats, amplitude: float, rng: np.random.Generator) -> Floats:
    """Filming a display: fine slanted fringes beating against the sensor, rolling bands."""
    x, y = _grid((img.shape[1], img.shape[0]))
    theta = float(rng.uniform(0.2, 1.2))
    period = float(rng.uniform(3.2, 5.5))
    fine = np.sin(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / period)
    beat = 0.55 + 0.45 * np.sin(2 * math.pi * (x - 0.6 * y) / float(rng.uniform(60, 120)))
    bands = 1 - 0.12 * (amplitude / 40) * (0.5 + 0.5 * np.sin(2 * math.pi * y / 37.0))
    pattern = amplitude * fine * beat * screen
    rgb = np.stack([pattern, 0.7 * pattern, 1.2 * pattern], axis=2)
    return np.asarray(img * (1 - screen[:, :, None] * (1 - bands[:, :, None])) + rgb, np.float32)


def _camera(img: Floats, spec: Spec, rng: np.random.Generator) -> Image:
    """Optics, mirroring, exposure and the sensor: what the kiosk's frame looks like."""
    if spec.defocus > 0:
        img = np.asarray(cv2.GaussianBlur(img, (0, 0), spec.defocus), np.float32)
    if spec.motion > 1:
        kernel = np.zeros((spec.motion, spec.motion), np.float32)
        kernel[spec.motion // 2, :] = 1.0 / spec.motion
        rot = cv2.getRotationMatrix2D(
            (spec.motion / 2 - 0.5, spec.motion / 2 - 0.5), float(rng.uniform(-30, 30)), 1.0
        )
        kernel = np.asarray(cv2.warpAffine(kernel, rot, (spec.motion, spec.motion)), np.float32)
        img = np.asarray(cv2.filter2D(img, -1, kernel / max(float(kernel.sum()), 1e-6)), np.float32)
    if spec.mirrored:
        img = img[:, ::-1]
    # The sensor's own noise is fixed: the gain a dark scene needs amplifies it too.
    sigma = spec.noise / math.sqrt(max(spec.gain, 0.05))
    size = (img.shape[1], img.shape[0])
    out = np.multiply(img, spec.gain, dtype=np.float32)  # a new array: `img` may be a view
    out += (_noise_field(size, rng) * sigma)[:, :, None]
    out += _noise_field(size, rng, channels=3) * (sigma * 0.3)
    out += 0.5
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _render(spec: Spec) -> tuple[Image, bytes | None]:
    """The frame for `spec`, and its JPEG bytes when the spec stores it as JPEG."""
    rng = np.random.default_rng([spec.seed, 15])
    mods = _modules(spec)
    k = max(3, math.ceil(spec.module * 2))  # the sheet at twice the frame's resolution
    sheet = _SURFACES[spec.surface](spec, mods, k, rng)
    if spec.damage:
        _damage(sheet, spec, rng)
    if spec.moire <= 0:  # anti-alias: the lens, not the warp, is what blurs
        sheet.image = np.asarray(
            cv2.GaussianBlur(sheet.image, (0, 0), 0.5 * k / spec.module), np.uint8
        )
    dst = _pose(spec, sheet, k)
    frame, screen = _place(_background(spec.frame, rng), sheet, dst)
    code_px = sheet.code[2] * spec.module / k
    centre = np.array(
        [spec.frame[0] / 2 + spec.offset[0], spec.frame[1] / 2 + spec.offset[1]], np.float32
    )
    frame = _light(frame, spec, centre, code_px, rng)
    if spec.moire > 0:
        frame = _moire(frame, screen, spec.moire, rng)
    image = _camera(frame, spec, rng)
    if not spec.jpeg:
        return image, None
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.asarray(decoded, np.uint8), buf.tobytes()


# -- the categories ---------------------------------------------------------------------------

# Byte-mode capacity at error level M, for the dense codes' forced versions.
_CAPACITY_M = {10: 213, 12: 287, 14: 362, 15: 412, 17: 504, 18: 560, 20: 666, 22: 779, 25: 997}

Level = Callable[[Spec, int, np.random.Generator], Spec]


def _pick(values: Sequence[Any], level: int) -> Any:
    return values[level]


def _phone_screen(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    return replace(
        s,
        surface="phone",
        brightness=_pick([1.0, 0.9, 0.8, 0.55, 0.45, 0.35, 0.2, 0.12, 0.06], lv),
        module=_pick([5.0, 4.5, 4.0, 3.6, 3.2, 3.0, 2.9, 2.8, 2.7], lv),
        defocus=_pick([0.6, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0], lv),
    )


def _printed_photo(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    return replace(
        s,
        surface="paper",
        curl=_pick([0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.9, 1.0, 1.0], lv),
        shadow=_pick([0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6], lv),
        uneven=_pick([0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6], lv),
        module=_pick([5.0, 4.5, 4.2, 4.0, 3.8, 3.6, 3.4, 3.2, 3.0], lv),
        defocus=_pick([0.7, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.0], lv),
    )


def _glare(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    return replace(
        s,
        glare=_pick([60, 90, 120, 150, 170, 190, 210, 225, 240], lv),
        glare_size=_pick([0.12, 0.14, 0.16, 0.18, 0.2, 0.22, 0.25, 0.28, 0.3], lv),
    )


def _perspective(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    angle = _pick([15, 20, 28, 35, 40, 45, 52, 58, 64], lv)
    split = float(rng.uniform(0.2, 0.8))
    sign = rng.choice([-1, 1], 2)
    return replace(
        s,
        yaw=float(sign[0]) * angle * math.sqrt(split),
        pitch=float(sign[1]) * angle * math.sqrt(1 - split),
        module=_pick([5.0, 4.8, 4.5, 4.2, 4.0, 3.8, 3.5, 3.2, 3.0], lv),
    )


def _blur(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    module = _pick([5.0, 5.0, 4.5, 4.5, 4.0, 4.0, 4.0, 3.5, 3.5], lv)
    rel = _pick([0.2, 0.25, 0.3, 0.34, 0.37, 0.4, 0.43, 0.46, 0.5], lv)
    motion = _pick([0, 4, 0, 6, 0, 8, 0, 10, 0], lv)
    return replace(s, module=module, defocus=module * rel if not motion else 0.8, motion=motion)


def _jpeg(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    return replace(
        s,
        jpeg=_pick([60, 45, 35, 25, 18, 14, 10, 7, 5], lv),
        module=_pick([4.5, 4.0, 4.0, 3.5, 3.2, 3.0, 2.8, 2.6, 2.5], lv),
    )


def _low_light(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    return replace(
        s,
        gain=_pick([0.5, 0.4, 0.32, 0.26, 0.22, 0.18, 0.15, 0.12, 0.1], lv),
        noise=2.5,
        defocus=_pick([0.6, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.9], lv),
    )


def _mirrored(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    return replace(
        s,
        mirrored=True,
        module=_pick([5.0, 4.5, 4.0, 3.6, 3.3, 3.0, 2.9, 2.8, 2.7], lv),
        defocus=_pick([0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0], lv),
        yaw=s.yaw + _pick([0, 5, 10, 15, 20, 25, 30, 30, 35], lv),
    )


def _thin_quiet_zone(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    return replace(
        s,
        surface="terminal",
        border=_pick([2, 2, 2, 1, 1, 1, 1, 1, 0], lv),
        module=_pick([5.0, 4.0, 3.5, 5.0, 4.0, 3.5, 3.0, 4.0, 5.0], lv),
        line_gaps=_pick([False, False, True, False, False, True, False, True, False], lv),
        defocus=_pick([0.6, 0.7, 0.8, 0.6, 0.7, 0.8, 0.9, 0.9, 0.6], lv),
    )


def _inverted(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    return replace(
        s,
        inverted=True,
        surface="paper" if lv % 3 == 2 else "phone",
        module=_pick([5.0, 4.5, 4.0, 3.6, 3.2, 3.0, 2.8, 2.6, 2.4], lv),
        defocus=_pick([0.6, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3], lv),
        brightness=_pick([1.0, 0.9, 1.0, 0.6, 0.5, 1.0, 0.3, 0.25, 1.0], lv),
    )


def _moire_level(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    return replace(
        s,
        surface="terminal" if lv % 3 == 1 else "phone",
        border=4,
        moire=_pick([15, 22, 30, 38, 46, 54, 62, 70, 80], lv),
        noise=_pick([3, 3, 4, 4, 5, 5, 6, 6, 7], lv),
        module=_pick([4.5, 4.2, 4.0, 3.8, 3.6, 3.4, 3.2, 3.0, 2.8], lv),
    )


def _small(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    return replace(
        s,
        text=payload("token", int(s.name[-3:]), rng),
        module=_pick([2.6, 2.4, 2.2, 2.0, 1.9, 1.8, 1.7, 1.6, 1.5], lv),
        defocus=0.5,
        frame=(1280, 720) if lv % 3 == 2 else (640, 480),  # held far off at 720p too
        offset=(float(rng.uniform(-200, 200)), float(rng.uniform(-140, 140))),
    )


def _dense(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    version = _pick([10, 10, 12, 14, 15, 17, 18, 20, 25], lv)
    big = version >= 17
    length = int(_CAPACITY_M[version] * 0.9)
    return replace(
        s,
        text=payload("long", int(s.name[-3:]), rng, length),
        error="m",
        version=version,
        surface="phone" if lv % 2 == 0 else "paper",
        frame=(1280, 720) if big else (640, 480),
        module=_pick([4.0, 3.5, 3.0, 3.0, 2.8, 3.0, 2.8, 2.6, 2.6], lv),
        defocus=_pick([0.6, 0.7, 0.7, 0.8, 0.8, 0.9, 0.9, 1.0, 1.0], lv),
        offset=(s.offset[0] * 0.3, s.offset[1] * 0.3),
    )


def _rotated(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    return replace(
        s,
        roll=float(_pick([20, 45, 70, 100, 135, 160, 180, -120, -150], lv)),
        module=_pick([5.0, 4.5, 4.2, 3.8, 3.5, 3.2, 3.0, 2.8, 2.6], lv),
        defocus=_pick([0.6, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0], lv),
    )


def _damaged(s: Spec, lv: int, rng: np.random.Generator) -> Spec:
    return replace(
        s,
        error=_pick(["h", "q", "h", "h", "q", "h", "h", "q", "h"], lv),
        damage=_pick(["finger", "scratch", "stain"], lv % 3),
        damage_size=_pick([0.12, 0.12, 0.14, 0.2, 0.2, 0.22, 0.3, 0.3, 0.34], lv),
    )


_LEVELS: dict[str, Level] = {
    "phone_screen": _phone_screen,
    "printed_photo": _printed_photo,
    "glare": _glare,
    "perspective": _perspective,
    "blur": _blur,
    "jpeg": _jpeg,
    "low_light": _low_light,
    "mirrored": _mirrored,
    "thin_quiet_zone": _thin_quiet_zone,
    "inverted": _inverted,
    "moire": _moire_level,
    "small": _small,
    "dense": _dense,
    "rotated": _rotated,
    "damaged": _damaged,
}


def _base(category: str, index: int, seed: int) -> Spec:
    """A typical hand-held shot: a phone or a paper pass, a little turned, off centre."""
    rng = np.random.default_rng([seed, index])
    kind = str(rng.choice(["url", "token", "signed", "chinese"], p=[0.35, 0.25, 0.28, 0.12]))
    return Spec(
        category=category,
        name=f"{category}-{index:03d}",
        text=payload(kind, index, rng),
        seed=seed * 1000 + index,
        error=str(rng.choice(["l", "m", "m", "q", "h"])),
        module=float(rng.uniform(4.0, 5.5)),
        surface=str(rng.choice(["phone", "paper"], p=[0.65, 0.35])),
        brightness=float(rng.uniform(0.7, 1.0)),
        roll=float(rng.uniform(-10, 10)),
        yaw=float(rng.uniform(-10, 10)),
        pitch=float(rng.uniform(-10, 10)),
        offset=(float(rng.uniform(-60, 60)), float(rng.uniform(-40, 40))),
        noise=float(rng.uniform(1.5, 3.0)),
    )


def specs(seed: int = 0) -> list[Spec]:
    """Every image's recipe, category by category, easy to hard within each."""
    out = []
    for c, category in enumerate(CATEGORIES):
        for level in range(PER_CATEGORY):
            index = c * PER_CATEGORY + level
            rng = np.random.default_rng([seed, index, 1])
            out.append(_LEVELS[category](_base(category, index, seed), level, rng))
    return out


@functools.cache
def _rendered(seed: int) -> tuple[tuple[CorpusImage, bytes | None], ...]:
    out = []
    for spec in specs(seed):
        image, encoded = _render(spec)
        image.setflags(write=False)
        out.append((CorpusImage(spec.category, spec.name, spec.text, image), encoded))
    return tuple(out)


def corpus(seed: int = 0) -> list[CorpusImage]:
    """The corpus: 15 categories × 9 images, built once per process and seed."""
    return [img for img, _ in _rendered(seed)]


# -- decoders ---------------------------------------------------------------------------------


def _gray(img: CorpusImage | Image) -> Image:
    image = img.image if isinstance(img, CorpusImage) else img
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), np.uint8)


def naive_reads(img: CorpusImage | Image) -> set[bytes]:
    """Full-frame pyzbar on the grayscale frame, QR only: the naive baseline."""
    from pyzbar import pyzbar
    from pyzbar.pyzbar import ZBarSymbol

    return {bytes(s.data) for s in pyzbar.decode(_gray(img), symbols=[ZBarSymbol.QRCODE])}


def zxing_reads(img: CorpusImage | Image) -> set[bytes]:
    """Full-frame zxing-cpp with its defaults (rotation, downscale, inversion tries)."""
    import zxingcpp

    qr_only = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    found = zxingcpp.read_barcodes(_gray(img), formats=qr_only)
    return {bytes(b.bytes) for b in found}


def pipeline_reads(img: CorpusImage | Image, frames: int = 8, fps: float = 15.0) -> set[bytes]:
    """A fresh `QrDecoder` fed the still image as `frames` frames at `fps`: what it reads."""
    from device.sources.qrscan import QrDecoder

    image = img.image if isinstance(img, CorpusImage) else img
    decoder = QrDecoder()
    out: set[bytes] = set()
    for i in range(frames):
        out |= {d.data for d in decoder.decode(image, i / fps)}
    return out


READERS: dict[str, Callable[[CorpusImage], set[bytes]]] = {
    "pipeline": pipeline_reads,
    "naive": naive_reads,
    "zxing": zxing_reads,
}


def reads(images: Sequence[CorpusImage]) -> dict[str, dict[str, bool]]:
    """image name -> decoder -> did it read the expected text."""
    return {
        img.name: {d: img.text.encode() in fn(img) for d, fn in READERS.items()} for img in images
    }


def measure(images: Sequence[CorpusImage]) -> dict[str, dict[str, tuple[int, int]]]:
    """category -> decoder -> (images read, images), decoders "pipeline", "naive", "zxing"."""
    hits = reads(images)
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for img in images:
        row = out.setdefault(img.category, {d: (0, 0) for d in DECODERS})
        for d in DECODERS:
            read, total = row[d]
            row[d] = (read + hits[img.name][d], total + 1)
    return out


def table(result: dict[str, dict[str, tuple[int, int]]]) -> str:
    """The per-category markdown table, with a total row."""
    lines = ["| category | " + " | ".join(DECODERS) + " |", "|---" * (len(DECODERS) + 1) + "|"]
    totals = {d: [0, 0] for d in DECODERS}
    for category, row in result.items():
        cells = []
        for d in DECODERS:
            read, total = row[d]
            totals[d][0] += read
            totals[d][1] += total
            cells.append(f"{read}/{total}")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"{r}/{t}" for r, t in totals.values()) + " |")
    return "\n".join(lines)


def write(directory: Path, seed: int = 0, categories: Sequence[str] = CATEGORIES) -> list[Path]:
    """Images as files: PNG, the JPEG category as the very JPEG bytes it was made from.

    `expected.tsv` beside them maps each file name to the text its code holds.
    """
    directory.mkdir(parents=True, exist_ok=True)
    chosen = [(img, enc) for img, enc in _rendered(seed) if img.category in categories]
    paths = []
    for img, encoded in chosen:
        if encoded is not None:
            path = directory / f"{img.name}.jpg"
            path.write_bytes(encoded)
        else:
            path = directory / f"{img.name}.png"
            cv2.imwrite(str(path), img.image)
        paths.append(path)
    (directory / "expected.tsv").write_text(
        "".join(f"{p.name}\t{img.text}\n" for p, (img, _) in zip(paths, chosen, strict=True)),
        encoding="utf-8",
    )
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.device.qrcorpus", description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", type=Path, metavar="DIR", help="dump the images into DIR")
    parser.add_argument("--table", action="store_true", help="print the per-category table")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    images = corpus(args.seed)
    print(f"{len(images)} images generated in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.write:
        print(f"wrote {len(write(args.write, args.seed))} files to {args.write}", file=sys.stderr)
    if args.table:
        start = time.perf_counter()
        result = measure(images)
        print(table(result))
        print(f"measured in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
