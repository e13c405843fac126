"""Prompt audio as numbers: load, check, level, trim, join and save short clips.

The prompt is the citizen's whole interface (issue 16), so every clip the kiosk plays,
synthesised or recorded, goes through the same few steps before it is cached:

* :func:`normalise` brings it to one integrated loudness (EBU R128 / ITU-R BS.1770 LUFS,
  measured by pyloudnorm) and keeps its sample peak under a ceiling with a look-ahead
  limiter, so "绿码通行" is not quieter than "设备故障" in a noisy station and no clip
  clips the DAC;
* :func:`trim_leading_silence` cuts what the synthesiser or the microphone left before and
  after the words, because the three-second promise counts from the first *audible* sample;
* :func:`problems` says why a recorded clip cannot be used (too long for a tap every 3 s,
  silent, too short) so the caller can fall back to synthesis and name the file.

Everything here is a pure function of a :class:`Clip` (float32 mono samples in [-1, 1] and
a rate) except :func:`load_clip` and :func:`save_wav`, so it can be tested on generated
tones as well as on real espeak renders.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt
import pyloudnorm
import soundfile
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import resample_poly  # type: ignore[import-untyped]

from device.errors import VoiceError

__all__ = [
    "Clip",
    "ClipStats",
    "concat",
    "load_clip",
    "loudness",
    "normalise",
    "peak_dbfs",
    "prepare",
    "problems",
    "save_wav",
    "stats",
    "trim_leading_silence",
    "with_gain",
]

Samples = npt.NDArray[np.float32]
_R = TypeVar("_R")

#: BS.1770's gating block; shorter clips are measured as one block of their own length.
_BLOCK_S: Final = 0.4
#: A clip whose sample peak stays under this is "silent" (no usable sound at any volume).
SILENT_PEAK_DBFS: Final = -50.0
#: Shorter than this cannot hold a spoken word.
MIN_DURATION_S: Final = 0.1
#: The longest file :func:`load_clip` decodes by default: far more than any prompt, even an
#: engine's raw render before it is spoken again faster, and little memory (2.6 MB at
#: 22 kHz mono), so a misconfigured long recording is refused before it is decoded.
MAX_LOAD_S: Final = 30.0
#: The limiter's look-ahead/release window: short enough not to pump on speech, long
#: enough that the gain ramps instead of stepping (a step is an audible click).
_LIMITER_WINDOW_S: Final = 0.005
_NORMALISE_ROUNDS: Final = 4
_NORMALISE_TOLERANCE_LU: Final = 0.05


@dataclass(frozen=True, eq=False)
class Clip:
    """Mono audio: float32 ``samples`` in [-1, 1] at ``rate`` Hz (read-only array)."""

    samples: Samples
    rate: int

    def __post_init__(self) -> None:
        if int(self.rate) <= 0:
            raise ValueError(f"sample rate must be positive, not {self.rate}")
        samples = np.array(self.samples, dtype=np.float32, copy=True).reshape(-1)
        samples.setflags(write=False)
        object.__setattr__(self, "samples", samples)
        object.__setattr__(self, "rate", int(self.rate))

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.rate


@dataclass(frozen=True)
class ClipStats:
    """What the voice check reports per clip (``-inf`` for a silent one)."""

    duration_s: float
    lufs: float
    peak_dbfs: float
    leading_silence_ms: float


# --------------------------------------------------------------------------- files


def load_clip(path: Path | str, *, max_duration_s: float = MAX_LOAD_S) -> Clip:
    """Read a WAV, OGG or FLAC file (anything libsndfile decodes); stereo is mixed down.

    VoiceError naming the file when it is missing, unreadable, not audio, or longer than
    ``max_duration_s``, so a bad recorded clip is reported as that file and not as a stack
    trace. The length is read from the header before anything is decoded, and decoding
    stops one frame past the limit whatever the header said: a compressed file inflates
    about 400-fold as float32 (a 1 MB ten-minute OGG cost 434 MB when it was decoded first).
    """
    if not (math.isfinite(max_duration_s) and max_duration_s > 0):
        raise ValueError(
            f"max_duration_s must be a positive number of seconds, not {max_duration_s}"
        )
    path = Path(path)
    info = _read(path, lambda: soundfile.info(str(path)))
    if info.samplerate <= 0:
        raise VoiceError(f"{path.name}: not a readable audio file (sample rate {info.samplerate})")
    limit = math.floor(max_duration_s * info.samplerate)
    if info.frames > limit:
        seconds = _seconds(info.frames / info.samplerate, max_duration_s)
        raise VoiceError(f"{path.name}: too long: {seconds} > {max_duration_s:g} s")
    data, rate = _read(
        path,
        lambda: soundfile.read(str(path), frames=limit + 1, dtype="float32", always_2d=True),
    )
    if len(data) > limit:  # the header under-counted: refused all the same
        raise VoiceError(
            f"{path.name}: too long: over {max_duration_s:g} s "
            f"(its header says {info.frames / info.samplerate:.1f} s)"
        )
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return Clip(np.clip(mono, -1.0, 1.0), int(rate))


def _read(path: Path, call: Callable[[], _R]) -> _R:
    """``call()`` (a soundfile read), its failures as a VoiceError naming ``path``."""
    try:
        return call()
    except (OSError, RuntimeError, ValueError, TypeError) as exc:
        # soundfile.LibsndfileError derives from RuntimeError
        raise VoiceError(f"{path.name}: not a readable audio file ({exc})") from exc


def save_wav(clip: Clip, path: Path | str) -> None:
    """Write 16-bit PCM mono WAV: what ``aplay`` plays and ``check_wav`` accepts."""
    try:
        soundfile.write(str(path), clip.samples, clip.rate, subtype="PCM_16", format="WAV")
    except (OSError, RuntimeError, ValueError) as exc:
        raise VoiceError(f"cannot write {Path(path).name}: {exc}") from exc


# --------------------------------------------------------------------------- measures


def peak_dbfs(clip: Clip) -> float:
    """Sample peak in dB relative to full scale (``-inf`` for an empty or zero clip)."""
    peak = _peak(clip)
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def loudness(clip: Clip) -> float:
    """Integrated loudness in LUFS (BS.1770 gating); ``-inf`` for silence.

    A clip shorter than BS.1770's 400 ms block is measured as one block of its own length
    (padding it with silence would read it quieter than it sounds).
    """
    if len(clip.samples) < 2 or peak_dbfs(clip) == -math.inf:
        return -math.inf
    block = min(_BLOCK_S, clip.duration_s)
    meter = pyloudnorm.Meter(clip.rate, block_size=block)
    try:
        value = float(meter.integrated_loudness(clip.samples.astype(np.float64)))
    except ValueError:
        return -math.inf
    return value if math.isfinite(value) else -math.inf


def leading_silence_ms(clip: Clip, *, threshold_dbfs: float = -45.0) -> float:
    """Time from the first sample to the first one at or above ``threshold_dbfs``."""
    loud = np.flatnonzero(np.abs(clip.samples) >= _linear(threshold_dbfs))
    first = int(loud[0]) if len(loud) else len(clip.samples)
    return 1000.0 * first / clip.rate


def stats(clip: Clip) -> ClipStats:
    """Duration, loudness, peak and leading silence of ``clip``."""
    return ClipStats(
        duration_s=clip.duration_s,
        lufs=loudness(clip),
        peak_dbfs=peak_dbfs(clip),
        leading_silence_ms=leading_silence_ms(clip),
    )


def problems(
    clip: Clip, *, max_duration_s: float = 2.5, min_duration_s: float = MIN_DURATION_S
) -> list[str]:
    """Why ``clip`` cannot be a prompt (empty list: it can).

    ``too long`` (a tap every 3 s would cut it off), ``too short`` (no word fits), or
    ``silent`` (peak under -50 dBFS: no gain makes it audible without making it noise).
    """
    found: list[str] = []
    if clip.duration_s > max_duration_s:
        found.append(
            f"too long: {_seconds(clip.duration_s, max_duration_s)} > {max_duration_s:g} s"
        )
    if clip.duration_s < min_duration_s:
        found.append(f"too short: {clip.duration_s:.2f} s < {min_duration_s:g} s")
    if peak_dbfs(clip) < SILENT_PEAK_DBFS:
        found.append("silent")
    return found


# --------------------------------------------------------------------------- transforms


def with_gain(clip: Clip, gain_db: float) -> Clip:
    """``clip`` scaled by ``gain_db`` (clamped to [-1, 1], so a boost can clip)."""
    scaled = clip.samples * np.float32(_linear(gain_db))
    return Clip(np.clip(scaled, -1.0, 1.0), clip.rate)


def normalise(clip: Clip, *, target_lufs: float = -20.0, peak_dbfs: float = -1.0) -> Clip:
    """``clip`` at ``target_lufs`` integrated loudness with its sample peak ≤ ``peak_dbfs``.

    Gain to the target, then a look-ahead limiter holds the peaks under the ceiling (a
    plain scale-down would leave peaky clips quieter than the rest, which is what this is
    for). Limiting lowers the loudness a little, so gain and limit repeat until the level is
    within 0.05 LU of the target (or the ceiling makes the target unreachable). A silent
    clip is returned as it is: there is no level to bring up.
    """
    ceiling = _linear(peak_dbfs)
    current = clip
    for _ in range(_NORMALISE_ROUNDS):
        level = loudness(current)
        if level == -math.inf:
            return current
        if abs(level - target_lufs) <= _NORMALISE_TOLERANCE_LU and _peak(current) <= ceiling:
            break
        scaled = current.samples.astype(np.float64) * _linear(target_lufs - level)
        current = Clip(_limit(scaled, ceiling, current.rate), current.rate)
    return current


def trim_leading_silence(
    clip: Clip, *, threshold_dbfs: float = -45.0, keep_ms: float = 5.0
) -> Clip:
    """``clip`` without the silence before its first and after its last audible sample.

    ``keep_ms`` of the quiet lead-in and tail stay so the cut does not bite into a soft
    onset. Run it after :func:`normalise`: the threshold is absolute, and a quiet recording
    would otherwise lose its words. A clip with nothing above the threshold is unchanged.
    """
    loud = np.flatnonzero(np.abs(clip.samples) >= _linear(threshold_dbfs))
    if not len(loud):
        return clip
    keep = round(keep_ms * clip.rate / 1000.0)
    start = max(0, int(loud[0]) - keep)
    end = min(len(clip.samples), int(loud[-1]) + 1 + keep)
    return Clip(clip.samples[start:end], clip.rate)


def prepare(clip: Clip, *, target_lufs: float = -20.0, peak_dbfs: float = -1.0) -> Clip:
    """A prompt ready to cache: normalised, trimmed at both ends, then levelled again.

    Levelled first so the trim threshold means the same on every clip (a quiet recording
    keeps its words), and again after the trim because BS.1770 measures in 400 ms blocks
    whose alignment the cut shifts (up to ~0.5 LU on espeak's prompts).
    """
    levelled = normalise(clip, target_lufs=target_lufs, peak_dbfs=peak_dbfs)
    trimmed = trim_leading_silence(levelled)
    return normalise(trimmed, target_lufs=target_lufs, peak_dbfs=peak_dbfs)


def concat(first: Clip, second: Clip, *, gap_s: float = 0.12) -> Clip:
    """``first``, ``gap_s`` of silence, then ``second`` (resampled to ``first``'s rate)."""
    if gap_s < 0:
        raise ValueError(f"gap must not be negative, not {gap_s}")
    tail = _resample(second, first.rate)
    gap = np.zeros(round(gap_s * first.rate), dtype=np.float32)
    return Clip(np.concatenate([first.samples, gap, tail]), first.rate)


# --------------------------------------------------------------------------- helpers


def _linear(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def _peak(clip: Clip) -> float:
    return float(np.max(np.abs(clip.samples))) if len(clip.samples) else 0.0


def _seconds(value: float, limit: float) -> str:
    """``value`` with enough decimals that it does not print as ``limit`` or below it."""
    for decimals in (1, 2, 3):
        text = f"{value:.{decimals}f}"
        if float(text) > limit:
            return f"{text} s"
    return f"{value:.4f} s"


def _limit(samples: npt.NDArray[np.float64], ceiling: float, rate: int) -> Samples:
    """Look-ahead peak limiter: every sample ends at or under ``ceiling``, smoothly.

    The gain each sample needs is ``min(1, ceiling/|x|)``; a running minimum over a
    trailing window of L samples followed by a moving average over the next L gives a
    gain curve that ramps down *before* a peak and back up after it, and that is never
    above the gain any sample needs (every averaged minimum covers that sample).
    """
    n = len(samples)
    if n == 0:
        return samples.astype(np.float32)
    magnitude = np.abs(samples)
    need = np.ones(n)
    over = magnitude > ceiling
    if not over.any():
        return samples.astype(np.float32)
    need[over] = ceiling / magnitude[over]
    width = max(1, round(_LIMITER_WINDOW_S * rate))
    pad = np.ones(width - 1)
    padded: npt.NDArray[np.float64] = np.concatenate([pad, need, pad])
    minima: npt.NDArray[np.float64] = sliding_window_view(padded, width).min(axis=1)
    sums: npt.NDArray[np.float64] = np.concatenate([[0.0], np.cumsum(minima)])
    gain: npt.NDArray[np.float64] = (sums[width : width + n] - sums[:n]) / width
    limited: npt.NDArray[np.float64] = samples * np.minimum(
        gain, need
    )  # guards float rounding in the average
    return np.clip(limited, -ceiling, ceiling).astype(np.float32)


def _resample(clip: Clip, rate: int) -> Samples:
    if clip.rate == rate:
        return clip.samples
    common = math.gcd(clip.rate, rate)
    out: npt.NDArray[np.float64] = resample_poly(
        clip.samples.astype(np.float64), rate // common, clip.rate // common
    )
    return np.clip(out, -1.0, 1.0).astype(np.float32)
