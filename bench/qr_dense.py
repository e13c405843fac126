"""Dense QR codes (versions 10–25): the smallest module size the camera pipeline still reads.

Health-code payloads seen at gates are often long URLs or signed tokens, so the code on the
citizen's phone is a version 10–25 symbol with 57–117 modules across. The kiosk's camera sees
it at 640×480 or 1280×720; the question is how many pixels per module the pipeline needs, and
so how close the phone must be held (docs/dense-codes.md turns the figures into advice).

Each scene is one still camera frame: a wall with a door frame and a poster, a phone (dark
body, white screen with a header bar) showing the code with its 4-module quiet zone, held with
a small seeded rotation (2–6°) and perspective (one edge 3–8 % shorter than the opposite one),
and an offset from the frame centre. The phone is drawn at 4× and area-resampled, so module
edges fall between pixels as they do on a sensor. Then the camera: optical blur (Gaussian,
sigma 0.55 px at 640×480 and 0.8 px at 1280×720: the same lens spread over 1.5× the pixels),
sensor noise (sigma 3 levels) and JPEG at quality 80, as an MJPG webcam delivers. The payload
fills the version at error level M in byte mode: a long verification URL in even trials, a
base64url signed token (JWT-like) in odd trials; 4 trials by default.

"Reads" means the expected payload is decoded in every one of the seeded trials. Four
decoders see the same images: the pipeline (a fresh `QrDecoder` fed the image as 8 frames at
15 fps), naive full-frame pyzbar (QR only), zxing-cpp on the full frame, and the pipeline with
pyzbar alone (what a 32-bit Pi OS kiosk, without a zxing-cpp wheel, runs). A module size at
which the code plus its quiet zone, as placed, does not fit inside the frame is "n/f". The
minimum reported is the smallest stepped size from which every larger size that fits reads.

Everything runs on one core (OMP/OPENBLAS threads 1, `cv2.setNumThreads(1)`) and is
deterministic: the same seed gives the same images and the same table.

    .venv/bin/python bench/qr_dense.py [--trials 4] [--seed 0]

Prints the summary table, the per-size detail table, and a final JSON line.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before numpy and OpenCV load their thread pools
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse
import base64
import functools
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import segno
import zxingcpp
from pyzbar import pyzbar
from pyzbar.pyzbar import ZBarSymbol

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from device.sources.qrbackends import Preference  # noqa: E402
from device.sources.qrscan import QrDecoder  # noqa: E402

Image = npt.NDArray[np.uint8]
Resolution = tuple[int, int]

VERSIONS = (10, 15, 20, 25)
RESOLUTIONS: tuple[Resolution, ...] = ((640, 480), (1280, 720))
MODULE_SIZES = (1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0)
DECODERS = ("pipeline", "naive", "zxing", "pipeline_pyzbar")
DECODER_TITLES = {
    "pipeline": "pipeline",
    "naive": "naive pyzbar",
    "zxing": "zxing-cpp",
    "pipeline_pyzbar": "pipeline, pyzbar only",
}
BLUR_SIGMA = {480: 0.55, 720: 0.8}  # by frame height: one lens, more pixels across its spot
NOISE_SIGMA = 3.0
JPEG_QUALITY = 80
SUPERSAMPLE = 4  # every stepped module size is a whole number of quarter pixels
QUIET = 4  # quiet-zone modules each side, as the health-code apps show it
PIPELINE_FRAMES = 8  # a still image fed as frames at 15 fps, as the plan defines "reads"
PIPELINE_FPS = 15.0
TRIALS = 4  # per size: two URLs and two signed tokens; docs/dense-codes.md ran this many


# -- payloads ----------------------------------------------------------------------------------


@functools.cache
def capacity(version: int) -> int:
    """Bytes a version holds at error level M in byte mode (segno's own limit)."""
    lo, hi = 1, 3000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            segno.make("a" * mid, version=version, error="m", boost_error=False, mask=0)
        except segno.DataOverflowError:
            hi = mid - 1
        else:
            lo = mid
    return lo


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def payload(version: int, trial: int, seed: int = 0) -> str:
    """A health-code payload that fills `version` exactly: a long URL or a signed token."""
    rng = np.random.default_rng([seed, version, trial, 7])
    n = capacity(version)
    if trial % 2 == 0:
        head = "https://hc.gov.example.cn/h5/verify?v=3&region=110108&t="
        tail = _b64(rng.bytes(n))
        return (head + tail)[:n]
    header = _b64(b'{"alg":"ES256","typ":"JWT","kid":"hc-2026-11"}')
    signature = _b64(rng.bytes(64))
    claims = _b64(
        b'{"iss":"hc.gov.example.cn","st":"green","iat":1795000000,"ext":"'
        + _b64(rng.bytes(n)).encode()
    )
    body_len = n - len(header) - len(signature) - 2
    return f"{header}.{claims[:body_len]}.{signature}"


def symbol_modules(version: int) -> int:
    """Modules across the symbol, without the quiet zone."""
    return 17 + 4 * version


@functools.lru_cache(maxsize=16)
def _matrix(text: str, version: int) -> npt.NDArray[np.bool_]:
    qr = segno.make(text, version=version, error="m", boost_error=False, micro=False)
    if qr.version != version:
        raise ValueError(f"payload made version {qr.version}, not {version}")
    rows = list(qr.matrix_iter(scale=1, border=QUIET))
    return np.array(rows, dtype=bool)


# -- the scene ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """One still frame with a code, and what it must decode to."""

    version: int
    module_px: float
    resolution: Resolution
    trial: int
    text: str
    image: Image | None  # None: the code and its quiet zone do not fit inside the frame


def _background(resolution: Resolution, rng: np.random.Generator) -> Image:
    """A gate's wall, its overall level varied per scene."""
    shift = round(float(rng.uniform(-10, 10)))
    return np.clip(_wall(resolution).astype(np.int16) + shift, 0, 255).astype(np.uint8)


@functools.cache
def _wall(resolution: Resolution) -> Image:
    """A wall: a lighting gradient, a door frame, a poster with text (built once per size)."""
    w, h = resolution
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    base = 100 + 45 * y + 20 * x
    tint = np.array([6, 0, -4], np.float32)  # a slightly blue wall
    img = np.clip(base[:, :, None] + tint, 0, 255).astype(np.uint8)
    s = h / 480
    cv2.rectangle(img, (int(25 * s), int(15 * s)), (int(200 * s), h - 5), (70, 75, 80), int(8 * s))
    x0 = int(w - 180 * s)
    cv2.rectangle(img, (x0, int(40 * s)), (x0 + int(150 * s), int(150 * s)), (205, 210, 215), -1)
    for i, line in enumerate(("NOTICE", "Show your", "health code", "to the camera")):
        cv2.putText(
            img,
            line,
            (x0 + int(12 * s), int((70 + 22 * i) * s)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5 * s,
            (40, 40, 60),
            max(1, int(s)),
        )
    img.flags.writeable = False  # shared by every scene of this size
    return np.asarray(img, np.uint8)


def _phone(matrix: npt.NDArray[np.bool_], k: int) -> tuple[Image, Image, npt.NDArray[np.float32]]:
    """The phone at `k` pixels per module: BGR image, mask, and the code's corners in it."""
    side = matrix.shape[0] * k
    modules = np.where(matrix, 30, 228).astype(np.uint8)
    code = np.asarray(cv2.resize(modules, (side, side), interpolation=cv2.INTER_NEAREST))
    margin = side // 16
    screen_w = side + 2 * margin
    screen_h = int(screen_w * 1.8)
    bezel = max(8, side // 20)
    w, h = screen_w + 2 * bezel, screen_h + 2 * bezel
    phone = np.full((h, w, 3), 28, np.uint8)
    ramp = np.linspace(-8, 6, screen_h)[:, None] + [230, 226, 222]  # the backlight's falloff
    rows = np.clip(ramp, 0, 255).astype(np.uint8)[:, None, :]
    phone[bezel : bezel + screen_h, bezel : bezel + screen_w] = rows
    cv2.rectangle(
        phone, (bezel, bezel), (bezel + screen_w, bezel + screen_h // 9), (90, 160, 40), -1
    )
    top = bezel + (screen_h - side) // 2
    left = bezel + margin
    cv2.putText(
        phone,
        "HEALTH CODE",
        (left + side // 8, top - side // 12),
        cv2.FONT_HERSHEY_SIMPLEX,
        side / 380,
        (60, 60, 60),
        max(1, side // 150),
    )
    phone[top : top + side, left : left + side] = code[:, :, None]
    mask = np.zeros((h, w), np.uint8)
    cv2.rectangle(mask, (0, 0), (w - 1, h - 1), 255, -1)
    corners = np.array(
        [[left, top], [left + side, top], [left + side, top + side], [left, top + side]],
        np.float32,
    )
    return phone, mask, corners


def _placement(
    quiet_px: float, resolution: Resolution, rng: np.random.Generator
) -> npt.NDArray[np.float32] | None:
    """Where the code's corners (quiet zone included) land in the frame, or None if off it.

    Rotation 2–6° either way; perspective: one edge (left/right or top/bottom) 3–8 % shorter
    than its opposite, the module size at the centre staying `module_px`. A seeded offset from
    the centre, dropped when the code would not fit with it.
    """
    w, h = resolution
    angle = math.radians(float(rng.uniform(2, 6)) * (1 if rng.random() < 0.5 else -1))
    tilt = float(rng.uniform(0.03, 0.08)) * (1 if rng.random() < 0.5 else -1)
    horizontal = bool(rng.random() < 0.5)
    offset = rng.uniform(-0.08, 0.08, 2) * [w, h]
    q = quiet_px / 2
    a, b = 1 + tilt / 2, 1 - tilt / 2
    quad = np.array([[-q, -q * a], [q, -q * b], [q, q * b], [-q, q * a]], np.float64)
    if not horizontal:
        quad = np.array([[-q * a, -q], [q * a, -q], [q * b, q], [-q * b, q]], np.float64)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    placed = quad @ rot.T
    for shift in (offset, np.zeros(2)):
        pts = placed + np.array([w / 2 + shift[0], h / 2 + shift[1]])
        if bool(np.all(pts >= 1)) and bool(np.all(pts <= np.array([w - 1, h - 1]))):
            return np.asarray(pts, np.float32)
    return None


def _camera(frame: Image, resolution: Resolution, rng: np.random.Generator) -> Image:
    """Optical blur, sensor noise, MJPG compression."""
    sigma = BLUR_SIGMA[resolution[1]]
    out = cv2.GaussianBlur(frame, (0, 0), sigma).astype(np.float32)
    out += rng.standard_normal(out.shape, dtype=np.float32) * NOISE_SIGMA
    img = np.clip(out, 0, 255).round().astype(np.uint8)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return np.asarray(cv2.imdecode(jpg, cv2.IMREAD_COLOR), np.uint8)


def _composite(
    frame: Image, phone: Image, mask: Image, homography: npt.NDArray[np.float64]
) -> None:
    """Warp the phone (4× resolution) onto `frame` in place, area-resampled to frame pixels."""
    h, w = frame.shape[:2]
    ph, pw = phone.shape[:2]
    corners = np.array([[[0, 0]], [[pw, 0]], [[pw, ph]], [[0, ph]]], np.float32)
    ss = SUPERSAMPLE
    dst = cv2.perspectiveTransform(corners, homography).reshape(4, 2) / ss
    x0, y0 = max(0, int(dst[:, 0].min())), max(0, int(dst[:, 1].min()))
    x1, y1 = min(w, int(dst[:, 0].max()) + 2), min(h, int(dst[:, 1].max()) + 2)
    shift = np.array([[1, 0, -x0 * ss], [0, 1, -y0 * ss], [0, 0, 1]], np.float64)
    size = ((x1 - x0) * ss, (y1 - y0) * ss)
    big = cv2.warpPerspective(phone, shift @ homography, size, flags=cv2.INTER_LINEAR)
    big_mask = cv2.warpPerspective(mask, shift @ homography, size, flags=cv2.INTER_LINEAR)
    small = cv2.resize(big, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(big_mask, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    a = alpha.astype(np.float32)[:, :, None] / 255
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = (region * (1 - a) + small.astype(np.float32) * a).round().astype(np.uint8)


def scene(
    version: int, module_px: float, resolution: Resolution, trial: int, seed: int = 0
) -> Scene:
    """The seeded still frame for one version, module size, resolution and trial."""
    text = payload(version, trial, seed)
    rng = np.random.default_rng([seed, version, round(module_px * 100), resolution[0], trial])
    matrix = _matrix(text, version)
    quad = _placement(matrix.shape[0] * module_px, resolution, rng)
    if quad is None:
        return Scene(version, module_px, resolution, trial, text, None)
    k = round(module_px * SUPERSAMPLE)
    if abs(k - module_px * SUPERSAMPLE) > 1e-9:
        raise ValueError(f"module size {module_px} is not a whole number of quarter pixels")
    phone, mask, corners = _phone(matrix, k)
    homography = cv2.getPerspectiveTransform(corners, quad * SUPERSAMPLE).astype(np.float64)
    frame = _background(resolution, rng)
    _composite(frame, phone, mask, homography)
    return Scene(version, module_px, resolution, trial, text, _camera(frame, resolution, rng))


# -- decoders ----------------------------------------------------------------------------------


def _gray(image: Image) -> Image:
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), np.uint8)


def pipeline_reads(image: Image, backend: Preference = "auto") -> set[bytes]:
    """A fresh pipeline decoder fed the still image as 8 frames at 15 fps."""
    decoder = QrDecoder(backend=backend)
    out: set[bytes] = set()
    for i in range(PIPELINE_FRAMES):
        out.update(d.data for d in decoder.decode(image, i / PIPELINE_FPS))
    return out


def naive_reads(image: Image) -> set[bytes]:
    """pyzbar on the full grayscale frame, QR only."""
    return {s.data for s in pyzbar.decode(_gray(image), symbols=[ZBarSymbol.QRCODE])}


def zxing_reads(image: Image) -> set[bytes]:
    """zxing-cpp on the full grayscale frame, QR only, its default tries."""
    qr_only = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    found = zxingcpp.read_barcodes(_gray(image), formats=qr_only)
    return {bytes(b.bytes) for b in found}


READERS: dict[str, Callable[[Image], set[bytes]]] = {
    "pipeline": pipeline_reads,
    # A 32-bit Pi OS kiosk has no zxing-cpp wheel: the pipeline decodes with zbar alone.
    "pipeline_pyzbar": lambda image: pipeline_reads(image, "pyzbar"),
    "naive": naive_reads,
    "zxing": zxing_reads,
}


# -- measuring ---------------------------------------------------------------------------------

Cell = tuple[int, int] | None  # (trials read, trials) or None when it does not fit
Key = tuple[int, Resolution, str]  # version, resolution, decoder


@dataclass
class Measurement:
    """What a run found: cells per decoder, decoder CPU time, the pipeline's misses."""

    cells: dict[Key, dict[float, Cell]] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    # scenes a full-frame decoder read and the pipeline did not (the pipeline must be a superset)
    pipeline_missed: Counter[str] = field(default_factory=Counter)


def measure(trials: int, seed: int, decoders: Iterable[str] = DECODERS) -> Measurement:
    """Every decoder on every scene: version × resolution × module size × trial."""
    names = list(decoders)
    out = Measurement()
    for version in VERSIONS:
        for res in RESOLUTIONS:
            for m in MODULE_SIZES:
                scenes = [scene(version, m, res, t, seed) for t in range(trials)]
                for name in names:
                    out.cells.setdefault((version, res, name), {})[m] = None
                if any(s.image is None for s in scenes):
                    continue
                read = [_reads(s, names, out.cpu_s) for s in scenes]
                for name in names:
                    out.cells[(version, res, name)][m] = (sum(r[name] for r in read), trials)
                    if name in ("naive", "zxing"):
                        missed = sum(r[name] and not r.get("pipeline", True) for r in read)
                        out.pipeline_missed[name] += missed
    return out


def _reads(s: Scene, names: list[str], cpu_s: dict[str, float]) -> dict[str, bool]:
    """Which decoders read this scene's payload; their CPU time added to `cpu_s`."""
    assert s.image is not None
    out = {}
    for name in names:
        started = time.process_time()
        got = READERS[name](s.image)
        cpu_s[name] = cpu_s.get(name, 0.0) + time.process_time() - started
        out[name] = s.text.encode() in got
    return out


def minimum(row: dict[float, Cell]) -> float | None:
    """The smallest size from which every larger size that fits reads in every trial."""
    best: float | None = None
    for m in sorted(row, reverse=True):
        cell = row[m]
        if cell is None:
            continue
        if cell[0] < cell[1]:
            break
        best = m
    return best


def largest_fit(version: int, resolution: Resolution) -> float:
    """Module size at which the code and its quiet zone span the frame's height, unrotated."""
    return math.floor(resolution[1] / (symbol_modules(version) + 2 * QUIET) * 20) / 20


def res_name(resolution: Resolution) -> str:
    return f"{resolution[0]}×{resolution[1]}"


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def summary_table(cells: dict[Key, dict[float, Cell]]) -> list[str]:
    """The table docs/dense-codes.md carries (and tests/device/test_qr_dense.py checks)."""
    lines = [
        "| version | resolution | modules | pipeline min px | naive pyzbar min px "
        "| zxing-cpp min px | pipeline, pyzbar only, min px | fits up to px |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for version in VERSIONS:
        for res in RESOLUTIONS:
            mins = [_fmt(minimum(cells[(version, res, d)])) for d in DECODERS]
            lines.append(
                f"| {version} | {res_name(res)} | {symbol_modules(version)} | "
                + " | ".join(mins)
                + f" | {largest_fit(version, res):g} |"
            )
    return lines


def detail_table(cells: dict[Key, dict[float, Cell]]) -> list[str]:
    """Trials read per module size, decoder by decoder."""
    sizes = " | ".join(f"{m:g}" for m in MODULE_SIZES)
    lines = [
        f"| version | resolution | decoder | {sizes} |",
        "|---|---|---|" + "---|" * len(MODULE_SIZES),
    ]
    for (version, res, name), row in cells.items():
        marks = " | ".join("n/f" if c is None else f"{c[0]}/{c[1]}" for c in row.values())
        lines.append(f"| {version} | {res_name(res)} | {DECODER_TITLES[name]} | {marks} |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=TRIALS, help="seeded trials per size")
    parser.add_argument("--seed", type=int, default=0, help="scene seed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cv2.setNumThreads(1)
    with_affinity = hasattr(os, "sched_setaffinity")
    if with_affinity:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    started = time.perf_counter()
    found = measure(args.trials, args.seed)
    cells = found.cells
    wall = time.perf_counter() - started
    decoder = QrDecoder()
    print(f"Dense QR codes, level M, {args.trials} trials per size, seed {args.seed}, one core;")
    print(f"pipeline decoders: {decoder.decoder_names}")
    print()
    print("\n".join(summary_table(cells)))
    print()
    print("\n".join(detail_table(cells)))
    print()
    missed = found.pipeline_missed
    print(
        f"scenes the pipeline missed that naive pyzbar read: {missed['naive']}, "
        f"that zxing-cpp read: {missed['zxing']}"
    )
    print()
    out = {
        "trials": args.trials,
        "seed": args.seed,
        "minimum_px": {
            f"v{v}@{r[0]}x{r[1]}": {d: minimum(cells[(v, r, d)]) for d in DECODERS}
            for v in VERSIONS
            for r in RESOLUTIONS
        },
        "pipeline_missed": {d: found.pipeline_missed[d] for d in ("naive", "zxing")},
        "decoder_cpu_s": {d: round(s, 2) for d, s in found.cpu_s.items()},
        "pipeline_decoders": decoder.decoder_names,
        "wall_s": round(wall, 1),
        "one_core": with_affinity,
    }
    print(json.dumps(out))
    return 1 if sum(missed.values()) else 0  # never fewer than a full-frame decoder


if __name__ == "__main__":
    raise SystemExit(main())
