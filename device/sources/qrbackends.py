"""The QR decoders the camera pipeline can call: zxing-cpp first, pyzbar as the fallback.

zxing-cpp reads more real-world codes than zbar (inverted, mirrored, thin quiet zones, damage)
and is 5–18× faster per frame (bench/RESULTS.md). It publishes wheels for x86_64 and aarch64
(Raspberry Pi OS 64-bit) but not for armv7l, so a 32-bit Pi decodes with pyzbar alone. pyzbar
stays installed everywhere: it is the fallback when zxing-cpp is missing, raises, or finds
nothing where a code seems to be, and it reads a few codes zxing-cpp does not.

Both libraries are imported lazily, so a kiosk without libzbar0 or without zxing-cpp still
starts and reports what it has (`available()`, `kiosk doctor`).
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import zxingcpp

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]  # x, y, width, height in the decoded image's pixels
Preference = Literal["auto", "zxing", "pyzbar"]

ZXING = "zxing-cpp"
PYZBAR = "pyzbar"


@dataclass(frozen=True)
class Symbol:
    """One decoded QR code: its raw payload and where it is in the image."""

    data: bytes
    box: Box


class QrBackend(Protocol):
    """A decoder of the QR codes in one grayscale image."""

    name: str
    version: str

    def decode(self, gray: Image) -> list[Symbol]:
        """Every QR code found in `gray` (uint8, H×W)."""
        ...


class ZxingBackend:
    """zxing-cpp, QR only, with its own rotation, downscale and inversion tries."""

    name = ZXING

    def __init__(self) -> None:
        import zxingcpp  # ImportError when not installed: the caller falls back

        self._read = zxingcpp.read_barcodes
        self._formats = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
        self._text = zxingcpp.ContentType.Text
        self.version = _version("zxing-cpp")

    def decode(self, gray: Image) -> list[Symbol]:
        out = []
        for code in self._read(gray, formats=self._formats):
            out.append(Symbol(self._payload(code), _corners_box(code.position)))
        return out

    def _payload(self, code: zxingcpp.Barcode) -> bytes:
        """Text as UTF-8, as zbar gives it; other content as the raw bytes.

        zxing-cpp decodes text through the code's ECI or character-set guess (GB 18030 and
        Shift-JIS codes included), like zbar; binary content stays bytes, which the payload
        rules then refuse as not UTF-8 unless it is.
        """
        if code.content_type == self._text:
            return code.text.encode("utf-8")
        return bytes(code.bytes)


class ZbarBackend:
    """pyzbar (libzbar0), restricted to QR codes."""

    name = PYZBAR

    def __init__(self) -> None:
        from pyzbar import pyzbar  # ImportError when libzbar0 is missing
        from pyzbar.pyzbar import ZBarSymbol

        self._decode = pyzbar.decode
        self._qr_only = [ZBarSymbol.QRCODE]
        self.version = _version("pyzbar")

    def decode(self, gray: Image) -> list[Symbol]:
        out = []
        for sym in self._decode(gray, symbols=self._qr_only):
            left, top, width, height = sym.rect
            out.append(Symbol(bytes(sym.data), (left, top, width, height)))
        return out


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _corners_box(position: zxingcpp.Position) -> Box:
    points = [position.top_left, position.top_right, position.bottom_right, position.bottom_left]
    xs = [int(p.x) for p in points]
    ys = [int(p.y) for p in points]
    return min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1


def load(name: str) -> QrBackend | None:
    """The backend called `name` ("zxing-cpp" or "pyzbar"), or None when it cannot load."""
    try:
        return ZxingBackend() if name == ZXING else ZbarBackend()
    except (ImportError, OSError) as exc:  # pyzbar raises ImportError without libzbar0
        log.debug("qr backend %s unavailable: %s", name, exc)
        return None


def chain(preference: Preference = "auto") -> list[QrBackend]:
    """The backends to use, first decoder first: zxing-cpp then pyzbar, unless told otherwise.

    `"pyzbar"` uses pyzbar alone (zxing-cpp is not even imported). `"zxing"` and `"auto"` both
    put zxing-cpp first when it loads; the difference is only in what `kiosk doctor` says
    when it does not (a warning for `"zxing"`). An empty list means no decoder loads at all.
    """
    names = [PYZBAR] if preference == "pyzbar" else [ZXING, PYZBAR]
    return [b for b in (load(n) for n in names) if b is not None]


def describe(backends: list[QrBackend]) -> str:
    """'zxing-cpp 3.1.1, fallback pyzbar 0.1.9', for logs, health and the doctor."""
    if not backends:
        return "no QR decoder"
    first, *rest = backends
    text = f"{first.name} {first.version}"
    if rest:
        text += ", fallback " + ", ".join(f"{b.name} {b.version}" for b in rest)
    return text


SELF_TEST_TEXT = "SIHEYI QR SELF-TEST"
# The modules of a version-1 QR code holding SELF_TEST_TEXT ("#" dark), so that `kiosk doctor`
# can prove a decoder works without a camera and without a QR writer on the kiosk.
_SELF_TEST_MODULES = (
    "#######.###...#######",
    "#.....#.####..#.....#",
    "#.###.#.....#.#.###.#",
    "#.###.#.###.#.#.###.#",
    "#.###.#..#.#..#.###.#",
    "#.....#..#....#.....#",
    "#######.#.#.#.#######",
    "........#.##.........",
    "#.##.###.#....#..#.##",
    ".##....###..###..##.#",
    "..#####.##...#..####.",
    "#.......#.###..#....#",
    "#.#..##.#####..#.####",
    "........######..#...#",
    "#######.##....##.##.#",
    "#.....#.#..##..#...#.",
    "#.###.#..#.##.##.#...",
    "#.###.#.##..##.#...#.",
    "#.###.#.##..###..#...",
    "#.....#..#.....###...",
    "#######.#.#.###.####.",
)


def self_test_image(module_px: int = 6) -> Image:
    """SELF_TEST_TEXT as a grayscale image: black modules, a four-module white quiet zone."""
    dark = np.array([[c == "#" for c in row] for row in _SELF_TEST_MODULES], dtype=bool)
    code = np.where(dark, 0, 255).astype(np.uint8)
    code = np.pad(code, 4, constant_values=255)
    return np.kron(code, np.ones((module_px, module_px), np.uint8)).astype(np.uint8)


def self_test(backend: QrBackend) -> bool:
    """Does `backend` read the built-in test code? (False too when it raises.)"""
    try:
        found = backend.decode(self_test_image())
    except Exception:
        log.exception("qr backend %s failed its self-test", backend.name)
        return False
    return [s.data for s in found] == [SELF_TEST_TEXT.encode()]
