"""Generated camera scenes with one QR code, for the "never fewer than naive" property test.

Each `Scene` is a small frozen record (kind, frame size, payload, module size, quiet zone,
angle, position, contrast, noise...) that `render` turns into two BGR frames: the idle scene
without the code, and the same scene with the code in it. Everything outside what appears is
the same in both, byte for byte (the same sensor noise), so a stream of idle frames followed by
the held code is what a kiosk sees when a phone comes into a still view, or (`screen_first`)
when the code comes up on a phone already held still in view.

The kinds are the cases a region finder tuned on tidy codes can miss while a full-frame decoder
reads them:

- `terminal`: a code printed in a terminal window, 0–2 modules of light quiet zone, its dark
  modules the terminal's own dark background, text lines around it;
- `dark_phone`: a dark-mode phone app, the code on a light card 0–2 modules wide;
- `moire`: a phone screen filmed by the camera: the display's RGB subpixel grid, sampled by the
  sensor's pixels, beats into moiré fringes, plus sensor noise;
- `large`: a phone held close, the code filling 60–97 % of the frame height;
- `mirrored`: the code mirrored left to right (a selfie-camera screenshot, a code seen through
  glass);
- `small`: modules of 1.5–2.6 pixels;
- `rotated`: any in-plane angle.

`scenes()` is the hypothesis strategy; `EXAMPLES` holds one fixed scene per kind that naive
full-frame pyzbar reads, for the tests' explicit examples.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
import numpy.typing as npt
import segno
from hypothesis import strategies as st

Image = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]

KINDS = ("terminal", "dark_phone", "moire", "large", "mirrored", "small", "rotated")
SIZES = ((640, 480), (1280, 720))


@dataclass(frozen=True)
class Scene:
    """One generated scene: what is shown, where, and how the camera sees it."""

    kind: str
    payload: str
    module_px: float  # requested; `render` shrinks it so the code fits in the frame
    quiet: int = 4  # light quiet zone around the symbol, in modules
    width: int = 640
    height: int = 480
    angle: float = 0.0  # in-plane rotation, degrees
    mirrored: bool = False
    pos: tuple[float, float] = (0.5, 0.5)  # code centre, as a fraction of its free range
    dark: int = 25  # grey level of dark modules
    light: int = 230  # grey level of light modules and the quiet zone
    surround: int = 30  # dark UI / terminal background level (dark kinds)
    pitch: float = 0.0  # display pixel pitch in camera pixels (moiré); 0 = none
    depth: float = 0.0  # how strongly the subpixel grid modulates the screen (moiré)
    noise: float = 2.0  # sensor noise sigma, grey levels
    blur: float = 0.0  # optics: Gaussian sigma in pixels over the whole frame
    error: str = "m"
    seed: int = 0
    # The phone is in view before the code is: the idle frames show it with its app but no
    # code, and the code then appears on the still screen (the citizen opens the code with the
    # phone already held up). A change this small is not motion.
    screen_first: bool = False

    def describe(self) -> str:
        """One line for a failure report: every field, payload length instead of the text."""
        n = _matrix(self.payload, self.error, 0, False).shape[0]
        fields = {k: v for k, v in vars(self).items() if k != "payload"}
        return (
            f"{fields} payload_len={len(self.payload)} modules={n} "
            f"effective_module_px={_effective_module(self, n):.2f}"
        )


# -- strategies ------------------------------------------------------------------------------

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def payloads() -> st.SearchStrategy[str]:
    """Health-code-like payloads: short tokens, upper-case alphanumerics, long URLs."""
    token = st.text(_ALNUM + "-_.", min_size=6, max_size=40)
    upper = st.text(_ALNUM[:26] + _ALNUM[52:] + " $%*+-./:", min_size=4, max_size=60)
    url = st.text(_ALNUM + "-_~", min_size=8, max_size=140).map(
        lambda s: f"https://hc.example.cn/v?t={s}"
    )
    return st.one_of(token, upper, url)


@st.composite
def scenes(draw: st.DrawFn, kind: str | None = None) -> Scene:
    """A random scene of `kind` (any kind when None)."""
    kind = kind or draw(st.sampled_from(KINDS))
    width, height = draw(st.sampled_from((*SIZES[:1] * 3, SIZES[1])))
    fraction = st.floats(0.0, 1.0)
    dark = draw(st.integers(5, 80))
    light = draw(st.integers(dark + 80, 250))
    scene = Scene(
        kind=kind,
        payload=draw(payloads()),
        module_px=draw(st.floats(2.5, 6.0)),
        quiet=draw(st.integers(2, 4)),
        width=width,
        height=height,
        angle=draw(st.floats(-12.0, 12.0)),
        pos=(draw(fraction), draw(fraction)),
        dark=dark,
        light=light,
        noise=draw(st.floats(0.0, 6.0)),
        blur=draw(st.sampled_from((0.0, 0.0, 0.6, 1.0))),
        error=draw(st.sampled_from("lmqh")),
        seed=draw(st.integers(0, 2**16)),
        screen_first=draw(st.booleans()),
    )
    return _specialise(draw, scene)


def _specialise(draw: st.DrawFn, s: Scene) -> Scene:
    """The fields that make each kind what it is."""
    thin = st.sampled_from((1, 2, 0, 1, 2))  # hypothesis favours small integers: 0 at 1/5
    if s.kind == "terminal":
        surround = draw(st.integers(0, 60))
        return replace(s, quiet=draw(thin), surround=surround, dark=surround, angle=s.angle / 4)
    if s.kind == "dark_phone":
        return replace(s, quiet=draw(thin), surround=draw(st.integers(10, 60)))
    if s.kind == "moire":
        return replace(
            s,
            quiet=draw(st.integers(1, 4)),
            pitch=draw(st.floats(0.9, 3.5)),
            depth=draw(st.floats(0.2, 0.6)),
            noise=draw(st.floats(2.0, 8.0)),
            blur=draw(st.floats(0.3, 0.9)),
            surround=draw(st.sampled_from((s.light, 30))),
        )
    if s.kind == "large":
        fill = draw(st.floats(0.6, 0.97))
        return replace(s, quiet=draw(st.integers(0, 4)), module_px=-fill, angle=s.angle / 3)
    if s.kind == "mirrored":
        return replace(s, mirrored=True)
    if s.kind == "small":
        return replace(s, module_px=draw(st.floats(1.5, 2.6)), blur=0.0)
    if s.kind == "rotated":
        return replace(s, angle=draw(st.floats(-180.0, 180.0)))
    raise ValueError(f"unknown scene kind {s.kind!r}")


_URL = "https://hc.example.cn/v?t=Zx81-kd0Qm_Pw7Lr2Nc5Tb9Hs3Vy6Jf4"
EXAMPLES: dict[str, Scene] = {
    "terminal": Scene("terminal", "SHY1.042.QWERTY2345ASDFG", 4.0, quiet=1, surround=18, dark=18),
    "dark_phone": Scene("dark_phone", _URL, 3.5, quiet=1, surround=28, pos=(0.3, 0.6)),
    "moire": Scene(
        "moire", "SHY1.007.MOIREMOIRE23456", 4.0, quiet=2, pitch=1.7, depth=0.6, noise=6, blur=0.6
    ),
    "large": Scene("large", "SHY1.100.LARGE", -0.92, quiet=1, angle=2.0),
    "mirrored": Scene("mirrored", "SHY1.011.MIRRORED99", 4.0, mirrored=True, angle=-5.0),
    "small": Scene("small", "SHY1.012.SMALL", 2.4, pos=(0.8, 0.2), noise=1.0),
    "rotated": Scene("rotated", _URL, 3.5, angle=135.0, pos=(0.4, 0.4)),
    "large_720p": Scene(
        "large", "SHY1.101.WIDE", -0.9, quiet=0, width=1280, height=720, angle=-1.5
    ),
    # Scenes the decoder of 027f70c (regions and crops, no full-frame pass) missed although
    # naive pyzbar reads them:
    "terminal_low_contrast": Scene(
        "terminal",
        "https://hc.example.cn/v?t=Zx81-kd0Qm_Pw7L",
        3.0,
        quiet=2,
        dark=50,
        light=90,
        surround=50,
        angle=1.5,
        pos=(0.69, 0.0),
        noise=0.8,
        error="l",
        seed=15060,
    ),
    "moire_coarse_pitch": Scene(
        "moire",
        "SHY1.202.MOIRE.ABCDEF",
        2.8,
        quiet=4,
        dark=28,
        light=144,
        surround=30,
        pitch=2.8,
        depth=0.2,
        noise=5.4,
        blur=0.83,
        angle=3.0,
        pos=(0.92, 0.71),
        error="l",
        seed=1,
    ),
    "small_near_door": Scene(
        "small", "SHY1.012.SMALL", 1.8, quiet=2, noise=0.5, pos=(0.23, 0.15), seed=5
    ),
    "small_stream": Scene(
        "small", "SHY1.012.SMALL", 1.7, quiet=2, dark=20, noise=0.5, pos=(0.5, 0.35), seed=5
    ),
    "large_fill75_low_contrast": Scene(
        "large", "SHY1.100.LARGE", -0.75, quiet=2, dark=60, light=170, noise=3.0, angle=1.0
    ),
    # ... and that the decoders of 4c0fa2f-705beca missed in a stream although they read the still
    # image: the code appears without motion after the fallback was spent on the idle scene.
    "small_appears_unmoving": Scene(
        "small",
        "https://hc.example.cn/v?t=c1mxLpQ~2~yMK_~Ye9FZ1wUVl4nuYV-d8fNYv",
        1.5,
        quiet=3,
        dark=32,
        light=222,
        pos=(0.30375962504202964, 0.0),
        noise=0.09,
        error="l",
        seed=32,
    ),
    "moire_code_comes_up_on_held_phone": Scene(
        "moire",
        "https://hc.example.cn/v?t=mQHgnY7hqVE",
        4.28440865889936,
        quiet=2,
        dark=61,
        light=209,
        surround=209,
        pitch=3.48900617792456,
        depth=0.44362923516918285,
        noise=6.460736912247443,
        blur=0.8615113312551999,
        pos=(0.04950158617388324, 0.05),
        seed=243,
        screen_first=True,
    ),
    "mirrored_small_pyzbar_only": Scene(
        "mirrored",
        "Mp6yd9",
        2.5,
        quiet=4,
        dark=5,
        light=169,
        angle=0.4157505376291333,
        mirrored=True,
        pos=(0.7576273777358027, 1.192092896e-07),
        noise=1.192092896e-07,
        error="l",
        seed=4,
    ),
    "terminal_code_printed_no_quiet_zone": Scene(
        "terminal",
        "nTt.MpdTKV",
        5.143578915738878,
        quiet=0,
        dark=0,
        light=205,
        surround=0,
        angle=0.025,
        pos=(0.0, 0.0),
        noise=3.6125594176524576,
        blur=0.6,
        error="h",
        seed=19,
    ),
}
"""Fixed scenes, each read by naive full-frame pyzbar: one per kind, a 1280×720 one, and
regressions (scenes an earlier decoder missed)."""


# -- rendering -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def render(scene: Scene) -> tuple[Image, Image]:
    """(idle frame, frame with the code), BGR uint8.

    The two are identical, sensor noise included, outside what appears: the phone, or with
    `screen_first` only the code on its screen.
    """
    bg = _background(scene)
    idle, frame = bg.copy(), bg.copy()
    if scene.screen_first and scene.kind != "terminal":
        _place(idle, *_overlay(scene, code=False), scene)
    _place(frame, *_overlay(scene), scene)
    return _camera(idle, scene), _camera(frame, scene)


def gray(image: Image) -> Image:
    """The frame as the decoders see it."""
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), np.uint8)


@functools.lru_cache(maxsize=256)
def _matrix(payload: str, error: str, quiet: int, mirrored: bool) -> Image:
    """The symbol's modules (1 = dark) with `quiet` modules of border."""
    qr = segno.make(payload, error=error, micro=False, boost_error=False)
    m = np.array(list(qr.matrix_iter(scale=1, border=quiet)), dtype=np.uint8)
    return m[:, ::-1].copy() if mirrored else m


def _effective_module(s: Scene, n_symbol: int) -> float:
    """Module size in pixels: a negative `module_px` is the fraction of the frame height the
    symbol fills (large codes); otherwise shrunk so the code and quiet zone fit in the frame."""
    short = min(s.width, s.height)
    if s.module_px < 0:
        return -s.module_px * s.height / n_symbol
    return min(s.module_px, 0.85 * short / (n_symbol + 2 * s.quiet))


def _code_block(s: Scene, ss: int) -> Image:
    """The symbol and its quiet zone, grey, at `ss` times the camera scale."""
    m = _matrix(s.payload, s.error, s.quiet, s.mirrored)
    n_symbol = m.shape[0] - 2 * s.quiet
    side = max(1, round(m.shape[0] * _effective_module(s, n_symbol) * ss))
    img = np.where(m > 0, s.dark, s.light).astype(np.uint8)
    return np.asarray(cv2.resize(img, (side, side), interpolation=cv2.INTER_NEAREST), np.uint8)


def _overlay(s: Scene, *, code: bool = True) -> tuple[Image, Image, tuple[float, float], int]:
    """What appears in front of the idle scene: BGR, alpha, the code's centre in it, scale.

    Built at `ss` times the camera scale so that module edges land between pixels after the
    warp and the area downscale.
    """
    n = _matrix(s.payload, s.error, 0, False).shape[0]
    ss = 4 if _effective_module(s, n) * (n + 8) < 600 else 2
    block = _code_block(s, ss)
    side = block.shape[0]
    if s.kind == "terminal":  # the code is drawn into the terminal itself, no frame around it
        bgr = np.repeat(block[:, :, None], 3, axis=2)
        return bgr, np.full(block.shape, 255, np.uint8), (side / 2, side / 2), ss
    screen = s.surround if s.kind in ("dark_phone", "moire") else s.light
    margin = max(3 * ss, side // (14 if s.kind == "large" else 8))
    sw = side + 2 * margin
    sh = int(sw * 1.6)
    bezel = max(4 * ss, sw // 14)
    w, h = sw + 2 * bezel, sh + 2 * bezel
    phone = np.full((h, w, 3), (32, 30, 28), np.uint8)
    phone[bezel : bezel + sh, bezel : bezel + sw] = screen
    top = bezel + (sh - side) // 2
    left = bezel + margin
    ui = 150 if screen < 100 else 70
    cv2.rectangle(phone, (bezel, bezel), (bezel + sw, bezel + sh // 12), (ui,) * 3, -1)
    for row in range(3):  # "app" text lines above and below the code
        y = bezel + sh // 12 + (row + 1) * max(2, (top - bezel - sh // 12) // 4)
        cv2.line(phone, (left, y), (left + side * (3 - row) // 4, y), (ui,) * 3, max(1, ss))
        y2 = top + side + (row + 1) * max(2, (h - bezel - top - side) // 5)
        cv2.line(phone, (left, y2), (left + side // (row + 2), y2), (ui,) * 3, max(1, ss))
    if code:
        phone[top : top + side, left : left + side] = block[:, :, None]
    alpha = np.zeros((h, w), np.uint8)
    r = 3 * bezel
    cv2.rectangle(alpha, (r, 0), (w - r, h), 255, -1)
    cv2.rectangle(alpha, (0, r), (w, h - r), 255, -1)
    for cx, cy in ((r, r), (w - r, r), (r, h - r), (w - r, h - r)):
        cv2.circle(alpha, (cx, cy), r, 255, -1)
    return phone, alpha, (left + side / 2, top + side / 2), ss


def _code_centre(s: Scene, half_extent: float) -> tuple[float, float]:
    """Where the code's centre lands in the frame: `pos` over the range that keeps it inside."""
    out = []
    for frac, size in zip(s.pos, (s.width, s.height), strict=True):
        lo, hi = half_extent + 2, size - half_extent - 2
        out.append(size / 2 if hi <= lo else lo + frac * (hi - lo))
    return out[0], out[1]


def _place(
    frame: Image,
    overlay: Image,
    alpha: Image,
    code_centre: tuple[float, float],
    ss: int,
    s: Scene,
) -> None:
    """Rotate `overlay` about the code's centre, downscale it and blend it into `frame`."""
    a = math.radians(s.angle)
    cos, sin = math.cos(a), math.sin(a)
    m = _matrix(s.payload, s.error, 0, False).shape[0]
    code_half = _effective_module(s, m) * (m + 2 * s.quiet) / 2 * (abs(cos) + abs(sin))
    fx, fy = _code_centre(s, code_half)
    rot = np.array([[cos, -sin], [sin, cos]], np.float32)
    h, w = overlay.shape[:2]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32) / ss
    centre_o = np.array(code_centre, np.float32) / ss
    dst = (corners - centre_o) @ rot.T + np.array([fx, fy], np.float32)
    x0, y0 = np.maximum(np.floor(dst.min(axis=0)).astype(int), 0)
    x1 = min(math.ceil(float(dst[:, 0].max())), s.width)
    y1 = min(math.ceil(float(dst[:, 1].max())), s.height)
    if x1 <= x0 or y1 <= y0:
        return
    # overlay (ss px) -> canvas (ss px): q -> R q + ss * (centre_f - origin - R centre_o)
    shift = ss * (np.array([fx - x0, fy - y0], np.float32) - rot @ centre_o)
    affine = np.hstack([rot, shift[:, None]]).astype(np.float64)
    size = ((x1 - x0) * ss, (y1 - y0) * ss)
    big = cv2.warpAffine(overlay, affine, size, flags=cv2.INTER_LINEAR)
    big_a = cv2.warpAffine(alpha, affine, size, flags=cv2.INTER_LINEAR)
    small: Floats = cv2.resize(big, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA).astype(
        np.float32
    )
    a_small = cv2.resize(big_a, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    weight = (a_small.astype(np.float32) / 255.0)[:, :, None]
    if s.pitch > 0:
        small = small * _subpixel_grid(s, rot, (fx - x0, fy - y0), small.shape[:2])
    box = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(weight * small + (1 - weight) * box, 0, 255).round()


def _subpixel_grid(
    s: Scene, rot: Floats, centre: tuple[float, float], shape: tuple[int, ...]
) -> Floats:
    """Per-channel gain of a display's RGB stripe grid, point-sampled at the camera's pixels.

    The display rotates with the phone; a pitch near the camera's own pixel pitch aliases into
    broad moiré fringes, stronger in green (which dominates grey).
    """
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    dx, dy = xs + 0.5 - centre[0], ys + 0.5 - centre[1]
    u = (rot[0, 0] * dx + rot[1, 0] * dy) / s.pitch  # display coordinates, in display pixels
    v = (rot[0, 1] * dx + rot[1, 1] * dy) / s.pitch
    row = (v - np.floor(v)) < 0.8
    gains = []
    for k in (2, 1, 0):  # BGR channels; stripes run R, G, B from left to right
        phase = u - k / 3.0
        lit = ((phase - np.floor(phase)) < 0.28) & row
        gains.append(lit.astype(np.float32) / (0.28 * 0.8))
    grid = np.stack(gains, axis=2)
    grid = cv2.GaussianBlur(grid, (0, 0), 0.5)  # the lens: a little softer than a point
    return np.asarray((1 - s.depth) + s.depth * grid, np.float32)


def _background(s: Scene) -> Image:
    """The idle scene: a terminal on a monitor (terminal kind) or a wall with a door and a sign."""
    rng = np.random.default_rng(s.seed)
    w, h = s.width, s.height
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    wall = 100 + 45 * y + 20 * x
    tint = np.array([6, 0, -4], np.float32)  # a slightly blue wall
    img: Image = np.clip(wall[:, :, None] + tint, 0, 255).astype(np.uint8)
    k = w / 640
    if s.kind == "terminal":
        _terminal(img, s, rng)
        return img
    cv2.rectangle(img, (int(30 * k), int(20 * k)), (int(250 * k), h - 10), (70, 75, 80), 8)
    sx, sy = int(rng.integers(280, 430) * k), int(rng.integers(20, 60) * k)
    cv2.rectangle(img, (sx, sy), (sx + int(170 * k), sy + int(60 * k)), (40, 140, 40), -1)
    cv2.putText(img, "EXIT", (sx + int(30 * k), sy + int(48 * k)), 0, 1.4 * k, (235, 240, 235), 3)
    for _ in range(8):  # scuffs and a poster's edge
        cx, cy = int(rng.integers(0, w)), int(rng.integers(h // 3, h))
        cv2.circle(img, (cx, cy), int(rng.integers(3, 9)), (90, 95, 100), -1)
    return img


def _terminal(img: Image, s: Scene, rng: np.random.Generator) -> None:
    """A monitor bezel and a terminal window that fills most of the frame, with text lines."""
    w, h = s.width, s.height
    mx, my = int(w * 0.03), int(h * 0.03)
    cv2.rectangle(img, (0, 0), (w, h), (20, 20, 22), max(4, mx))  # the monitor's bezel
    bg = (s.surround, s.surround, s.surround)
    cv2.rectangle(img, (mx, my), (w - mx, h - my), bg, -1)
    title = (min(255, s.surround + 45),) * 3
    cv2.rectangle(img, (mx, my), (w - mx, my + int(h * 0.05)), title, -1)
    glyphs = "abcdefghijklmnopqrstuvwxyz0123456789$#>/-_.:"
    scale = 0.4 * w / 640
    step = max(10, int(16 * w / 640))
    ink = [(180, 180, 180), (90, 200, 90), (220, 200, 120)]
    for row in range(my + int(h * 0.05) + step, h - my - 4, step):
        n = int(rng.integers(0, 60))
        text = "".join(glyphs[int(i)] for i in rng.integers(0, len(glyphs), n))
        colour = ink[int(rng.integers(0, len(ink)))]
        cv2.putText(img, text, (mx + 6, row), cv2.FONT_HERSHEY_PLAIN, scale * 2, colour, 1)


def _camera(frame: Image, s: Scene) -> Image:
    """Optics blur and sensor noise: the same noise field for every frame of the scene."""
    f: Floats = frame.astype(np.float32)
    if s.blur > 0:
        f = np.asarray(cv2.GaussianBlur(f, (0, 0), s.blur), np.float32)
    if s.noise > 0:
        f = f + _noise_field(s.seed, f.shape, s.noise)
    return np.clip(f, 0, 255).round().astype(np.uint8)


@functools.lru_cache(maxsize=2)
def _noise_field(seed: int, shape: tuple[int, ...], sigma: float) -> Floats:
    rng = np.random.default_rng(seed + 1)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
