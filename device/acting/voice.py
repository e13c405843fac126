"""Spoken prompts: synthesised once, cached as WAV, played without ever stalling a tap.

DESIGN.md "The three-second promise" gives the prompt's first audio sample 100 ms, which
rules out synthesising during a tap. So:

* :class:`PromptRenderer` renders each prompt text with pyttsx3 (espeak) once, into a cache
  keyed by text + voice + rate + loudness target + peak ceiling. pyttsx3 is not thread-safe
  and espeak can hang, so every synthesis runs in a short-lived child process
  (``python -m device.acting.voice render ...``) with a timeout: a wedged engine costs one
  killed child, never the agent. The raw render is then levelled to one loudness and
  trimmed (:func:`device.acting.audio.prepare`, docs/voice.md) before it lands in the cache,
  so every prompt is equally loud and starts at once.
* players share one small interface (:class:`Player`): ``play`` returns as soon as playback
  has *started* and interrupts the previous prompt. Like gpiozero's pin factories there is a
  real backend (:class:`AplayPlayer`) and in-package ones for tests and demos
  (:class:`MockPlayer` records, :class:`FileSinkPlayer` keeps what was played,
  :class:`NullPlayer` drops it); :func:`make_player` maps a config string to one.
* :class:`Voice` is the asyncio facade the agent uses: ``say`` only looks up a pre-rendered
  clip and starts the player on a thread with a short timeout, so a missing or hanging audio
  device ends in a :class:`~device.errors.PlayerError` (journalled as a fault), not silence
  and a hung gate.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import wave
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, Self, TypeVar

from device.acting.clips import ClipLibrary
from device.acting.volume import VolumeSchedule, apply_gain, volume_copy
from device.errors import PlayerError, VoiceError

if TYPE_CHECKING:  # languages imports this module (PromptRenderer)
    from device.acting.languages import SecondLanguage


class VoiceSettings(Protocol):
    """What a renderer needs of the `[voice]` section (device.config.VoiceConfig)."""

    @property
    def voice(self) -> str: ...
    @property
    def rate(self) -> int: ...
    @property
    def loudness_lufs(self) -> float: ...
    @property
    def peak_dbfs(self) -> float: ...


__all__ = [
    "AplayPlayer",
    "FileSinkPlayer",
    "MockPlayer",
    "NullPlayer",
    "Player",
    "PromptRenderer",
    "Voice",
    "VoiceParts",
    "check_wav",
    "make_player",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_VOICE: Final = "sit/cmn"
DEFAULT_RATE: Final = 170
#: Integrated loudness (LUFS) and sample-peak ceiling (dBFS) every cached prompt is set to.
DEFAULT_LOUDNESS_LUFS: Final = -20.0
DEFAULT_PEAK_DBFS: Final = -1.0
#: A prompt longer than this may be cut off by the next tap (one every 3 s).
MAX_PROMPT_S: Final = 2.5
#: The fastest a too-long synthesised prompt is spoken again to fit MAX_PROMPT_S (words per
#: minute): about five syllables a second from espeak-ng's Mandarin, brisk conversational
#: speech. At the default 170 wpm '设备故障，请联系工作人员' lasts 4.8 s; at 340 it is 2.4 s.
FIT_MAX_RATE: Final = 340
#: Outcome keys tried, in order, when a prompt text has no rendered clip yet.
FALLBACK_KEYS: Final = ("generic", "fault")

# Exit codes of the render child, so the parent can tell "not installed" from a crash.
_RENDER_ATTEMPTS: Final = 3
_EXIT_UNAVAILABLE: Final = 3
_EXIT_FAILED: Final = 4

# The package's parent directory, put on the render child's PYTHONPATH so that
# ``python -m device.acting.voice`` works whatever the agent's working directory is.
_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parents[2])


def check_wav(path: Path) -> float:
    """Return the duration in seconds of a non-empty PCM WAV file; VoiceError otherwise.

    Guards against caching what a crashed or misconfigured engine left behind: a truncated
    file or a header with no samples would otherwise be "played" as silence forever.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
            channels, width = wav.getnchannels(), wav.getsampwidth()
    except (OSError, EOFError, wave.Error) as exc:
        raise VoiceError(f"{path} is not a readable WAV file: {exc}") from exc
    if frames <= 0 or rate <= 0 or channels <= 0 or width <= 0:
        raise VoiceError(f"{path} holds no audio ({frames} frames at {rate} Hz)")
    size = path.stat().st_size
    if size < 44 + frames * channels * width:
        raise VoiceError(f"{path} is truncated ({size} bytes for {frames} frames)")
    return frames / rate


# --------------------------------------------------------------------------- rendering


class PromptRenderer:
    """Renders prompt texts to cached WAV files, one child process per synthesis.

    ``cache_dir/<sha256(text|voice|rate|loudness_lufs|peak_dbfs|fit)>.wav``; a file is only ever
    created complete (the child writes a temporary file that is checked, levelled and
    trimmed into a second one, which is renamed over the final name), so a crash mid-render
    never leaves a clip that plays half a prompt. Safe to call from several threads.
    ``renders`` counts syntheses actually run (cache misses). ``loudness_lufs`` and
    ``peak_dbfs`` are the level every clip is brought to; changing them renders again. A
    prompt longer than ``max_duration_s`` at ``rate`` is spoken again as fast as fits (at
    most FIT_MAX_RATE), so that every synthesised prompt ends before the next tap.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        voice: str = DEFAULT_VOICE,
        rate: int = DEFAULT_RATE,
        timeout_s: float = 20.0,
        python: str | None = None,
        loudness_lufs: float = DEFAULT_LOUDNESS_LUFS,
        peak_dbfs: float = DEFAULT_PEAK_DBFS,
        max_duration_s: float | None = MAX_PROMPT_S,
        max_rate: int = FIT_MAX_RATE,
    ) -> None:
        if not (math.isfinite(loudness_lufs) and math.isfinite(peak_dbfs) and peak_dbfs <= 0):
            raise ValueError(
                f"loudness target {loudness_lufs} LUFS / peak {peak_dbfs} dBFS: "
                "finite, and the peak at most 0 dBFS"
            )
        self.cache_dir = Path(cache_dir)
        self.voice = voice
        self.rate = int(rate)
        self.loudness_lufs = float(loudness_lufs)
        self.peak_dbfs = float(peak_dbfs)
        #: A prompt longer than this is spoken again faster (None: never).
        self.max_duration_s = max_duration_s
        self.max_rate = int(max_rate)
        self.timeout_s = timeout_s
        self.python = python or sys.executable
        self._lock = threading.Lock()
        self.renders = 0  # clips synthesised (cache misses that succeeded)
        self.attempts = 0  # synthesis runs, retries included

    @classmethod
    def for_settings(cls, cache_dir: Path, settings: VoiceSettings) -> PromptRenderer:
        """The renderer the agent uses for `settings` (the `[voice]` section), so that the
        doctor and the agent look up the same cache files."""
        return cls(
            cache_dir,
            voice=settings.voice,
            rate=settings.rate,
            loudness_lufs=settings.loudness_lufs,
            peak_dbfs=settings.peak_dbfs,
        )

    def within(self, max_duration_s: float) -> PromptRenderer:
        """The same voice, rate and level, fitted to ``max_duration_s`` (its own cache
        files): the second language of a pair fitted to what the Chinese clip leaves."""
        return PromptRenderer(
            self.cache_dir,
            voice=self.voice,
            rate=self.rate,
            timeout_s=self.timeout_s,
            python=self.python,
            loudness_lufs=self.loudness_lufs,
            peak_dbfs=self.peak_dbfs,
            max_duration_s=max_duration_s,
            max_rate=self.max_rate,
        )

    def path_for(self, text: str) -> Path:
        """The cache file for ``text`` with this renderer's voice, rate and level."""
        level = f"{self.loudness_lufs:g}|{self.peak_dbfs:g}"
        fit = f"|fit{self.max_duration_s:g}@{self.max_rate}" if self.max_duration_s else ""
        key = f"{text}|{self.voice}|{self.rate}|{level}{fit}".encode()
        return self.cache_dir / f"{hashlib.sha256(key).hexdigest()}.wav"

    def cached(self, text: str) -> Path | None:
        """The cached clip for ``text`` if one exists and is a valid WAV, else None."""
        path = self.path_for(text)
        if not path.exists():
            return None
        try:
            check_wav(path)
        except VoiceError:
            log.warning("discarding broken cached prompt %s", path.name)
            path.unlink(missing_ok=True)
            return None
        return path

    def render(self, text: str) -> Path:
        """Return the clip for ``text``, synthesising it first on a cache miss.

        Blocks for the synthesis (up to ``timeout_s``): call it at start-up or from a
        thread, never on the event loop. VoiceError if pyttsx3/espeak or the voice is not
        available, the engine fails or hangs, or it produced no audio.
        """
        if not text.strip():
            raise VoiceError("cannot render an empty prompt")
        cached = self.cached(text)
        if cached is not None:
            return cached
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        final = self.path_for(text)
        tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex}.tmp.wav")
        raw = tmp.with_name(f"{tmp.stem}.raw.wav")
        # pyttsx3's espeak driver now and then writes an empty or truncated file and still
        # reports success (seen about once in a dozen renders here): check and try again.
        for attempt in range(1, _RENDER_ATTEMPTS + 1):
            try:
                self._render_fitting(text, raw, tmp)
                os.replace(tmp, final)
                with self._lock:
                    self.renders += 1
                return final
            except VoiceError as exc:
                if attempt == _RENDER_ATTEMPTS or "unavailable" in str(exc):
                    raise
                log.warning("prompt render attempt %d failed, retrying: %s", attempt, exc)
            finally:
                tmp.unlink(missing_ok=True)
                raw.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def _render_fitting(self, text: str, raw: Path, out: Path) -> None:
        """Synthesise ``text`` into ``out`` at the configured rate, and once more, faster,
        when that lasts longer than ``max_duration_s``: a prompt the next tap cuts off is
        worse than a brisk one, and recording a clip is the fix for one still too long."""
        duration = self._render_at(text, self.rate, raw, out)
        faster = self._fitting_rate(duration)
        if faster is not None:
            log.info("prompt %r lasts %.2f s at %d wpm: spoken at %d wpm to fit %g s",
                     text, duration, self.rate, faster, self.max_duration_s)  # fmt: skip
            expected = duration * self.rate / faster
            for _ in range(_RENDER_ATTEMPTS):
                duration = self._render_at(text, faster, raw, out)
                if duration <= 1.25 * expected:
                    break
                # Now and then pyttsx3's espeak writes a render far longer than the rate
                # gives (seen: 4.04 s where 2.4 s was due, under load): synthesise it again.
                log.warning("prompt %r at %d wpm lasts %.2f s, about %.2f s expected: rendered"
                            " again", text, faster, duration, expected)  # fmt: skip
        if duration > MAX_PROMPT_S:  # a shorter limit (a pair's room) is its caller's to report
            log.warning("prompt %r lasts %.2f s > %g s even at %d wpm: a tap every 3 s may cut"
                        " it off; shorten the text or record it", text, duration,
                        MAX_PROMPT_S, faster or self.rate)  # fmt: skip

    def _render_at(self, text: str, rate: int, raw: Path, out: Path) -> float:
        """One synthesis at ``rate``, checked and levelled into ``out``; its duration.

        ``raw`` is removed first: an engine that exits 0 without writing (pyttsx3 now and
        then does) must fail the check, not pass off the previous rate's render as this one.
        """
        with self._lock:
            self.attempts += 1
        raw.unlink(missing_ok=True)
        self._synthesise(text, raw, rate)
        check_wav(raw)
        self._level(raw, out)
        return check_wav(out)

    def _fitting_rate(self, duration_s: float) -> int | None:
        """The rate at which a prompt of ``duration_s`` would fit, with 4 % to spare (speech
        time scales with 1/rate), at most ``max_rate``; None when it fits or cannot go faster."""
        if self.max_duration_s is None or duration_s <= self.max_duration_s:
            return None
        wanted = math.ceil(self.rate * duration_s / (0.96 * self.max_duration_s))
        rate = min(self.max_rate, wanted)
        return rate if rate > self.rate else None

    def _level(self, raw: Path, out: Path) -> None:
        """Level and trim the engine's ``raw`` WAV into ``out``; VoiceError if it is unusable.

        Runs here rather than in the render child: the audio stack (pyloudnorm pulls in
        scipy) takes a second or more to import, which each child would pay per prompt; here
        it is imported once, and only on a cache miss, so an agent whose prompts are cached
        never loads it.
        """
        from device.acting import audio

        clip = audio.prepare(
            audio.load_clip(raw), target_lufs=self.loudness_lufs, peak_dbfs=self.peak_dbfs
        )
        unusable = audio.problems(clip, max_duration_s=math.inf)
        if unusable:
            raise VoiceError(f"speech synthesis produced no usable audio: {', '.join(unusable)}")
        audio.save_wav(clip, out)

    def prerender(self, texts: Iterable[str]) -> dict[str, Path]:
        """Render every distinct text; return ``{text: clip}``.

        Tries all texts even when some fail, so one bad prompt does not leave the others
        unrendered; then raises VoiceError naming the failures.
        """
        clips: dict[str, Path] = {}
        failures: list[str] = []
        for text in dict.fromkeys(texts):
            try:
                clips[text] = self.render(text)
            except VoiceError as exc:
                failures.append(f"{text!r}: {exc}")
        if failures:
            raise VoiceError("prompts not rendered: " + "; ".join(failures))
        return clips

    def _synthesise(self, text: str, out: Path, rate: int) -> None:
        argv = [
            self.python,
            "-m",
            "device.acting.voice",
            "render",
            "--voice",
            self.voice,
            "--rate",
            str(rate),
            "--out",
            str(out),
            "--",
            text,
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p
        )
        try:
            # Own session: on timeout the whole group (engine and anything it spawned) dies.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise VoiceError(f"cannot start the prompt renderer {self.python!r}: {exc}") from exc
        try:
            _, err = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise VoiceError(
                f"speech synthesis hung for {self.timeout_s:g} s and was killed ({text!r})"
            ) from None
        message = err.decode("utf-8", "replace").strip().splitlines()
        reason = message[-1] if message else f"exit status {proc.returncode}"
        if proc.returncode == _EXIT_UNAVAILABLE:
            raise VoiceError(f"speech synthesis unavailable: {reason}")
        if proc.returncode != 0:
            raise VoiceError(f"speech synthesis failed for {text!r}: {reason}")


def _render_in_this_process(text: str, voice: str, rate: int, out: Path) -> None:
    """Synthesise ``text`` into ``out`` with pyttsx3's espeak driver (the child's job)."""
    try:
        import pyttsx3
    except ImportError as exc:
        raise _Unavailable(f"pyttsx3 is not installed ({exc}); install the 'device' extra") from exc
    try:
        engine = pyttsx3.init("espeak")
    except Exception as exc:  # pyttsx3 surfaces a missing libespeak as many types
        raise _Unavailable(f"espeak driver cannot start (is espeak-ng installed?): {exc}") from exc
    available = [v.id for v in engine.getProperty("voices")]
    if voice not in available:
        matches = [v for v in available if "cmn" in v or "zh" in v][:5]
        raise _Unavailable(f"voice {voice!r} is not installed (Chinese voices: {matches})")
    engine.setProperty("voice", voice)
    engine.setProperty("rate", rate)
    engine.save_to_file(text, str(out))
    engine.runAndWait()


class _Unavailable(Exception):
    """Synthesis cannot work on this machine at all (exit code for the parent)."""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m device.acting.voice render --voice V --rate R --out PATH TEXT``."""
    parser = argparse.ArgumentParser(prog="python -m device.acting.voice")
    verbs = parser.add_subparsers(dest="verb", required=True)
    render = verbs.add_parser("render", help="synthesise one prompt into a WAV file")
    render.add_argument("--voice", default=DEFAULT_VOICE)
    render.add_argument("--rate", type=int, default=DEFAULT_RATE)
    render.add_argument("--out", type=Path, required=True)
    render.add_argument("text")
    args = parser.parse_args(argv)
    try:
        _render_in_this_process(args.text, args.voice, args.rate, args.out)
    except _Unavailable as exc:
        print(exc, file=sys.stderr)
        return _EXIT_UNAVAILABLE
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return _EXIT_FAILED
    return 0


# --------------------------------------------------------------------------- players


class Player(abc.ABC):
    """Plays WAV clips; one prompt at a time.

    ``play`` returns as soon as playback has started (never when it ends) and first
    interrupts whatever is still playing; ``stop`` silences; ``close`` releases the device.
    Errors are PlayerError.
    """

    @abc.abstractmethod
    def play(self, path: Path, text: str | None = None) -> None:
        """Start playing ``path`` (``text`` is what it says, for recording backends)."""

    def play_for(self, path: Path, text: str | None, outcome: str | None) -> None:
        """Play the prompt said for ``outcome`` (``pass``, ``check``, ``fault`` …; None for
        one that is no tap's). Only a player that keeps what it plays needs to know it."""
        self.play(path, text)

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the prompt playing now, if any."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop and release; the player must not be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _require_clip(path: Path) -> None:
    if not path.is_file():
        raise PlayerError(f"prompt clip {path} does not exist")


class AplayPlayer(Player):
    """ALSA playback through ``aplay`` child processes (the real backend).

    One process per prompt, terminated when the next prompt starts: killing a process is
    the one interruption that works whatever state the sound driver is in.
    ``device`` is an ALSA PCM name (``plughw:0,0``, ``null``), None for the default.
    """

    def __init__(self, device: str | None = None, command: str = "aplay") -> None:
        self.device = device
        self.command = command
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def argv(self, path: Path) -> list[str]:
        """The command line that plays ``path``."""
        argv = [self.command, "-q"]
        if self.device:
            argv += ["-D", self.device]
        return [*argv, str(path)]

    def play(self, path: Path, text: str | None = None) -> None:
        """Interrupt the previous prompt and start ``path``; returns once aplay runs."""
        with self._lock:
            if self._closed:
                raise PlayerError("player is closed")
            _require_clip(path)
            self._stop_locked()
            try:
                self._proc = subprocess.Popen(
                    self.argv(path),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            except FileNotFoundError as exc:
                raise PlayerError(f"audio player command {self.command!r} not found") from exc
            except OSError as exc:
                raise PlayerError(f"cannot start {self.command!r}: {exc}") from exc

    @property
    def pid(self) -> int | None:
        """Process id of the prompt still playing, if any."""
        with self._lock:
            proc = self._proc
            return proc.pid if proc is not None and proc.poll() is None else None

    def stop(self) -> None:
        """Terminate the playing process (killed if it ignores SIGTERM) and reap it."""
        with self._lock:
            self._stop_locked()

    def close(self) -> None:
        """Stop playback; later ``play`` calls raise PlayerError."""
        with self._lock:
            self._stop_locked()
            self._closed = True

    def _stop_locked(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif proc.returncode != 0:
            # Finished on its own with an error: the device is likely gone. Log it so the
            # cause of earlier silence is visible; the next play will fail loudly if so.
            log.warning("%s exited with status %d", self.command, proc.returncode)


class MockPlayer(Player):
    """Records what would have been played, in memory (tests and the demo).

    ``played`` holds ``(path, text, monotonic start time)`` per prompt. Fault behaviours:
    ``missing=True`` makes ``play`` raise PlayerError like a missing audio device;
    ``hang=True`` makes ``play`` block until ``stop``/``close`` (then raise PlayerError),
    like a wedged sound driver.
    """

    def __init__(
        self,
        *,
        hang: bool = False,
        missing: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hang = hang
        self.missing = missing
        self.played: list[tuple[Path, str | None, float]] = []
        self.stops = 0
        self.closed = False
        self._clock = clock
        self._release = threading.Event()
        self._lock = threading.Lock()

    def play(self, path: Path, text: str | None = None) -> None:
        """Record ``(path, text, now)`` or act out the configured fault."""
        if self.closed:
            raise PlayerError("player is closed")
        if self.missing:
            raise PlayerError("mock audio device is missing")
        if self.hang:
            self._release.clear()
            self._release.wait()
            raise PlayerError("mock audio device hung; playback aborted")
        with self._lock:
            self.played.append((Path(path), text, self._clock()))

    @property
    def texts(self) -> list[str | None]:
        """The texts played so far, in order."""
        with self._lock:
            return [text for _, text, _ in self.played]

    def stop(self) -> None:
        """Count the stop and release a hung ``play``."""
        self.stops += 1
        self._release.set()

    def close(self) -> None:
        """Release a hung ``play``; later calls raise PlayerError."""
        self.closed = True
        self._release.set()


class NullPlayer(Player):
    """Drops audio without a trace (``player = "null"``: kiosks without a speaker)."""

    def play(self, path: Path, text: str | None = None) -> None:
        """Do nothing."""

    def stop(self) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


class FileSinkPlayer(Player):
    """Copies each played clip into a directory as ``NNNNNN-<outcome>.wav`` (recording sink):
    ``000001-pass.wav``, ``000002-check.wav``; ``NNNNNN-prompt.wav`` for a prompt that is no
    tap's (the doctor's speak test). The clip's own name is a hash of its text, which told a
    person listening through a demo's files nothing.

    Lets a demo or an end-to-end test check afterwards what the kiosk said and in which
    order, with real files. Numbering continues after files already in the directory. Each
    copy is written under a temporary name and renamed, so a reader never sees half a file.
    """

    _NUMBERED: Final = re.compile(r"^(\d{6})-")
    _UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")  # an outcome is a file name's part

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        numbers = [
            int(m.group(1))
            for name in os.listdir(self.directory)
            if (m := self._NUMBERED.match(name)) is not None
        ]
        self._seq = max(numbers, default=0)
        self._lock = threading.Lock()
        self._closed = False

    def play(self, path: Path, text: str | None = None) -> None:
        """Copy ``path`` into the sink as the next ``NNNNNN-prompt.wav``."""
        self.play_for(path, text, None)

    def play_for(self, path: Path, text: str | None, outcome: str | None) -> None:
        """Copy ``path`` into the sink as the next ``NNNNNN-<outcome>.wav``."""
        label = self._UNSAFE.sub("_", outcome or "") or "prompt"
        with self._lock:
            if self._closed:
                raise PlayerError("player is closed")
            _require_clip(path)
            self._seq += 1
            target = self.directory / f"{self._seq:06d}-{label}.wav"
            tmp = self.directory / f".{target.name}.tmp"
            try:
                shutil.copyfile(path, tmp)
                os.replace(tmp, target)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise PlayerError(f"cannot write to sink {self.directory}: {exc}") from exc

    def recorded(self) -> list[Path]:
        """Files in the sink, in play order."""
        return sorted(p for p in self.directory.iterdir() if self._NUMBERED.match(p.name))

    def stop(self) -> None:
        """Nothing keeps playing in a sink."""

    def close(self) -> None:
        """Later ``play`` calls raise PlayerError."""
        with self._lock:
            self._closed = True


def make_player(spec: str) -> Player:
    """Build a player from its configuration string.

    ``aplay`` (default ALSA device), ``aplay:<pcm>`` (e.g. ``aplay:plughw:0,0``,
    ``aplay:null``), ``null``, ``mock``, ``mock:hang``, ``mock:missing``,
    ``file:<directory>``. ValueError names an unknown spec.
    """
    scheme, _, arg = spec.strip().partition(":")
    if scheme == "aplay":
        return AplayPlayer(device=arg or None)
    if scheme == "null" and not arg:
        return NullPlayer()
    if scheme == "mock" and arg in ("", "hang", "missing"):
        return MockPlayer(hang=arg == "hang", missing=arg == "missing")
    if scheme == "file" and arg:
        return FileSinkPlayer(Path(arg))
    raise ValueError(
        f"unknown audio player {spec!r}: expected aplay, aplay:<device>, null, mock, "
        "mock:hang, mock:missing or file:<directory>"
    )


# --------------------------------------------------------------------------- facade


@dataclass(frozen=True)
class VoiceParts:
    """What a :class:`Voice` speaks with: prompts by key, the recorded clips, the volume
    schedule, the second language, the outcomes whose words a pack gives (spoken whatever
    text a tap brings, as a recording is) and the pack's label (None: no pack)."""

    prompts: Mapping[str, str]
    library: ClipLibrary | None = None
    schedule: VolumeSchedule = field(default_factory=VolumeSchedule)
    second_language: SecondLanguage | None = None
    remote_words: frozenset[str] = frozenset()
    pack: str | None = None


@dataclass(frozen=True)
class _Prepared:
    recorded: dict[str, Path]
    clips: dict[str, Path]
    failures: list[str]
    problems: list[str]
    unrendered: list[str] = field(default_factory=list)  # the texts of ``failures``
    #: Outcome -> the clip the previous set played for it, for an outcome whose new words
    #: could not be rendered (:meth:`Voice.retune`).
    stand_ins: dict[str, Path] = field(default_factory=dict)


class Voice:
    """What the agent calls to speak: pre-rendered prompts, bounded playback.

    ``prompts`` are the configured texts, either ``{outcome: text}`` (then a text that has
    no clip yet falls back to the clip of its outcome, else ``generic``, else ``fault``) or
    just texts. ``play_timeout_s`` bounds how long ``say`` waits for the player to start.

    ``library`` holds the site's recorded clips (loaded by :meth:`start`): a recorded clip
    for an outcome is played for that outcome instead of the synthesised prompt, whatever
    the text. ``schedule`` is the site's volume schedule, applied by the player as a scaled
    copy of the clip kept in ``volume_dir`` (made at start for every gain the schedule
    has, so a tap only looks it up); without ``volume_dir`` it is not applied.
    """

    def __init__(
        self,
        renderer: PromptRenderer,
        player: Player,
        prompts: Mapping[str, str] | Iterable[str],
        *,
        play_timeout_s: float = 0.3,
        library: ClipLibrary | None = None,
        schedule: VolumeSchedule | None = None,
        volume_dir: Path | None = None,
        second_language: SecondLanguage | None = None,
        remote_words: Iterable[str] = (),
        pack: str | None = None,
    ) -> None:
        self.renderer = renderer
        #: Joined Chinese + second-language clips per card type (None: Chinese only).
        self.second_language = second_language
        self.player = player
        self.library = library
        self.schedule = schedule if schedule is not None else VolumeSchedule()
        self.volume_dir = volume_dir
        #: Recorded clips by key (``pass``, ``pass.en``), once :meth:`start` loaded them.
        self.recorded: Mapping[str, Path] = {}
        if isinstance(prompts, Mapping):
            self._by_key: dict[str, str] = dict(prompts)
            self._texts = list(dict.fromkeys(self._by_key.values()))
        else:
            self._by_key = {}
            self._texts = list(dict.fromkeys(prompts))
        self.play_timeout_s = play_timeout_s
        self._clips: dict[str, Path] = {}
        self._renders: dict[str, asyncio.Task[None]] = {}
        self._player_done: threading.Event | None = None  # last exclusive call finished
        self.last_started: float | None = None
        #: For the heartbeat (server alert ``audio_fault``): whether the last attempt to
        #: speak worked (None: none yet), failed attempts, and the last error.
        self.last_ok: bool | None = None
        self.failures = 0
        self.last_error: str | None = None
        self.unrendered = 0
        self._unrendered: set[str] = set()  # the set's texts not rendered yet
        #: Outcomes whose words a voice pack gives: spoken whatever text a tap brings.
        self.remote_words = frozenset(remote_words)
        #: The voice pack in use (``name@sha-prefix``), for the heartbeat; None: none.
        self.pack = pack
        self.clip_problems: list[str] = []
        #: Whether the wall clock can be believed (the verifier's ClockTrust; None: always).
        #: The volume schedule is local time: on a clock nobody vouches for (a Pi without a
        #: real-time clock, booted offline) it could make the day quiet, so it waits.
        self.clock_trusted: Callable[[], bool] | None = None
        self._schedule_held = False
        #: Outcome -> the previous set's clip, played for it until its new words render.
        self._stand_ins: dict[str, Path] = {}
        self._retune_lock = asyncio.Lock()

    def parts(self) -> VoiceParts:
        """What this voice speaks with now (what :meth:`retune` would replace)."""
        return VoiceParts(
            dict(self._by_key),
            self.library,
            self.schedule,
            self.second_language,
            self.remote_words,
            self.pack,
        )

    @property
    def clips(self) -> Mapping[str, Path]:
        """Rendered clips by text (read-only view)."""
        return dict(self._clips)

    def ready(self, text: str) -> bool:
        """Whether ``text`` can be spoken without synthesis."""
        return text in self._clips

    async def start(self) -> None:
        """Render all configured prompts off the event loop (cache hits are instant).

        VoiceError if some could not be rendered; the others are ready, and ``say`` falls
        back for the missing ones, so the agent may log this and carry on.
        """
        async with self._retune_lock:
            prepared = await self._prepare(self.parts(), self._texts)
            self._install(self.parts(), prepared)
        if prepared.failures:
            raise VoiceError(self.last_error or "prompts not rendered")

    async def retune(self, parts: VoiceParts) -> bool:
        """Speak with other words, clips, schedule or languages from now on (a voice pack or
        remote settings arrived); return whether the change was made.

        Everything new is checked (a bad clip: a warning naming it, synthesis for its key),
        rendered and levelled off the event loop, then swapped in at once: a tap during the
        change hears the old set, never a mixture. If preparing fails the old set stays.
        An outcome whose new words cannot be rendered keeps the clip the old set played
        for it (an ERROR names the words) until they render in the background, so a
        passing citizen never hears another outcome's prompt, nor the fault one, for it.
        Cache files neither the old nor the new set uses are then removed, so a kiosk that
        gets new words every week keeps a bounded cache.
        """
        async with self._retune_lock:
            since = time.time()  # a background render finishing meanwhile is not pruned
            old = self._in_use()
            try:
                prepared = await self._prepare(parts, list(dict.fromkeys(parts.prompts.values())))
                prepared = await self._with_stand_ins(parts, prepared)
            except Exception as exc:  # a new set that cannot be prepared leaves the old one
                log.error("voice not changed, the previous words stay: %s", exc)
                return False
            self._by_key = dict(parts.prompts)
            self._texts = list(dict.fromkeys(self._by_key.values()))
            self._install(parts, prepared)
            await asyncio.to_thread(self._prune, old | self._in_use(), since)
        log.info("voice changed (pack %s, %d prompts)", parts.pack or "none", len(self._by_key))
        return True

    async def _with_stand_ins(self, parts: VoiceParts, prepared: _Prepared) -> _Prepared:
        """``prepared`` with the current set's clip for each outcome of ``parts`` whose
        words did not render, volume copies made for the new schedule (off the loop)."""
        if not prepared.unrendered:
            return prepared
        stand_ins: dict[str, Path] = {}
        for key, text in parts.prompts.items():
            clip = self._outcome_clip(key) if text in prepared.unrendered else None
            if clip is not None and await asyncio.to_thread(clip.is_file):
                stand_ins[key] = clip
        log.error(
            "voice change: %s not rendered; the previous words stand in for %s until "
            "they render at a tap",
            ", ".join(repr(t) for t in prepared.unrendered),
            ", ".join(sorted(stand_ins)) or "no outcome",
        )
        await asyncio.to_thread(self.prepare_volume, list(stand_ins.values()), parts.schedule)
        return replace(prepared, stand_ins=stand_ins)

    def _outcome_clip(self, key: str) -> Path | None:
        """The clip the current set plays for outcome ``key``'s own words (its recording,
        its rendered text, or the clip standing in for them), None when it has none."""
        text = self._by_key.get(key)
        clip = self.recorded.get(key) or (self._clips.get(text) if text is not None else None)
        return clip or self._stand_ins.get(key)

    async def _prepare(self, parts: VoiceParts, texts: Sequence[str]) -> _Prepared:
        """The clips of ``parts``: recordings checked and levelled, the other texts rendered,
        second-language pairs joined and volume copies made, all off the event loop."""
        recorded: dict[str, Path] = {}
        problems: list[str] = []
        if parts.library is not None:
            recorded = await asyncio.to_thread(parts.library.load)
            problems = [str(p) for p in parts.library.problems]
        clips = {t: recorded[k] for k, t in parts.prompts.items() if k in recorded}
        missing = [t for t in texts if t not in clips]

        def render_all() -> tuple[dict[str, Path], dict[str, str]]:
            rendered: dict[str, Path] = {}
            failures: dict[str, str] = {}
            for text in missing:
                try:
                    rendered[text] = self.renderer.render(text)
                except VoiceError as exc:
                    failures[text] = f"{text!r}: {exc}"
            return rendered, failures

        rendered, failures = await asyncio.to_thread(render_all)
        clips.update(rendered)
        second = parts.second_language
        if second is not None:  # never raises: a miss stays Chinese only
            second.recorded = {k: p for k, p in recorded.items() if "." in k}
            await asyncio.to_thread(second.prepare, dict(parts.prompts), dict(clips))
            await asyncio.to_thread(
                self.prepare_volume, list(second.clips.values()), parts.schedule
            )
        await asyncio.to_thread(self.prepare_volume, list(clips.values()), parts.schedule)
        return _Prepared(recorded, clips, list(failures.values()), problems, list(failures))

    def _install(self, parts: VoiceParts, prepared: _Prepared) -> None:
        """Swap the prepared set in; synchronous, so no tap sees half of it."""
        self.library = parts.library
        self.schedule = parts.schedule
        self.second_language = parts.second_language
        self.remote_words = frozenset(parts.remote_words)
        self.pack = parts.pack
        self.recorded = prepared.recorded
        self._clips = dict(prepared.clips)  # say() reads the new map, never a half-filled one
        self._stand_ins = dict(prepared.stand_ins)
        self.clip_problems = prepared.problems
        self._unrendered = set(prepared.unrendered)
        self.unrendered = len(prepared.failures)
        if prepared.failures:
            self.last_error = "prompts not rendered: " + "; ".join(prepared.failures)
        elif self.last_error and self.last_error.startswith("prompts not rendered"):
            self.last_error = None  # the new set is whole

    def _in_use(self) -> set[Path]:
        """Every cache file the current set plays or is made from."""
        used = {*self._clips.values(), *self.recorded.values(), *self._stand_ins.values()}
        second = self.second_language
        if second is not None:
            used.update(second.clips.values())
            used.update(second.sources)  # a pair's English fitted to its room, among others
            for lang, renderer in second.renderers.items():
                used.update(renderer.path_for(w) for w in second.texts.get(lang, {}).values())
        if self.volume_dir is not None:
            for clip in list(used):
                for gain in self.schedule.gains():
                    with contextlib.suppress(VoiceError):  # a clip gone has no copy to keep
                        used.add(volume_copy(clip, gain, self.volume_dir))
        return used

    def _prune(self, keep: set[Path], since: float) -> None:
        """Remove the prompt cache's finished files that are not in ``keep`` and older than
        ``since`` (never a temporary one, nor one a background render just made)."""
        directories = [self.renderer.cache_dir, self.renderer.cache_dir / "bilingual"]
        if self.volume_dir is not None:
            directories.append(self.volume_dir)
        kept = {p.resolve() for p in keep}
        removed = 0
        for directory in directories:
            with contextlib.suppress(OSError):
                for path in directory.glob("*.wav"):
                    if path.name.startswith(".") or path.resolve() in kept:
                        continue
                    if path.stat().st_mtime < since:
                        path.unlink(missing_ok=True)
                        removed += 1
        if removed:
            log.info("prompt cache: %d files no prompt uses any more removed", removed)

    async def say(
        self, text: str, *, outcome: str | None = None, card_type: str = "resident"
    ) -> float:
        """Start speaking ``text``; return the monotonic time playback started.

        Never synthesises on the caller's time: a text without a clip is rendered in the
        background for next time and a fallback clip is played now (VoiceError if there is
        none). PlayerError if the player fails or does not start within
        ``play_timeout_s``. Interrupts the previous prompt. ``card_type`` (the credential's)
        picks the clip joined with that card holder's second language, when there is one.
        """
        try:
            started = await self._say(text, outcome, card_type)
        except (VoiceError, PlayerError) as exc:
            self.last_ok, self.failures, self.last_error = False, self.failures + 1, str(exc)
            raise
        self.last_ok = True
        return started

    def clip_for(
        self, text: str, outcome: str | None = None, card_type: str = "resident"
    ) -> Path | None:
        """The clip `say` plays for this text, outcome and card, None when none is ready:
        the outcome's recording, else the rendered text, joined with the card holder's
        second language when that pair was prepared."""
        text = self._words(text, outcome)
        clip = self.recorded.get(outcome) if outcome else None
        if clip is None:
            clip = self._clips.get(text)
        if clip is not None and self.second_language is not None:
            clip = self.second_language.clip_for(text, card_type) or clip
        return clip

    def _words(self, text: str, outcome: str | None) -> str:
        """The words spoken for a tap's ``text``: a pack's words for ``outcome`` replace
        whatever text the tap brings."""
        if outcome is not None and outcome in self.remote_words:
            return self._by_key.get(outcome, text)
        return text

    @property
    def prompts(self) -> Mapping[str, str]:
        """The configured prompts by key (outcomes, ``speak_test``, ``guard_open``)."""
        return dict(self._by_key)

    async def _say(self, text: str, outcome: str | None, card_type: str) -> float:
        clip = self.clip_for(text, outcome, card_type)
        if clip is None:
            self._render_later(self._words(text, outcome), outcome)  # what clip_for looks up
            clip = self._fallback(outcome)
            if clip is None:
                log.error("prompt %r not rendered yet and no fallback clip: not spoken", text)
                raise VoiceError(f"prompt not rendered yet and no fallback: {text!r}")
            log.warning("prompt %r not rendered yet: playing fallback %s", text, clip.name)
        started = await self._call_player(
            functools.partial(self._play_and_time, clip, text, outcome, self._schedule_usable()),
            self.play_timeout_s,
            "play",
            exclusive=True,
        )
        self.last_started = started
        return started

    def health(self) -> dict[str, Any]:
        """What the heartbeat reports: ``ok`` is whether the last prompt played (before
        any, whether every configured prompt was rendered); ``pack`` and ``clip_problems``
        only when there is a voice pack or a left-out clip."""
        ok = self.last_ok if self.last_ok is not None else self.unrendered == 0
        error = self.last_error[:200] if self.last_error else None
        health: dict[str, Any] = {"ok": ok, "failures": self.failures, "last_error": error}
        if self.pack is not None:  # the voice pack in use, ``name@sha-prefix``
            health["pack"] = self.pack
        if self.clip_problems:  # recorded clips left out (synthesised instead), and why
            health["clip_problems"] = [p[:200] for p in self.clip_problems[:8]]
        return health

    async def stop(self) -> None:
        """Silence the current prompt (bounded like ``say``)."""
        await self._call_player(self.player.stop, self.play_timeout_s, "stop")

    async def close(self) -> None:
        """Cancel background renders and close the player; never hangs on a wedged device."""
        tasks = list(self._renders.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self._call_player(self.player.close, 2.0, "close")
        except PlayerError as exc:
            log.error("audio player did not close cleanly: %s", exc)

    def _fallback(self, outcome: str | None) -> Path | None:
        """The outcome's own words (or the clip standing in for them), else ``generic``'s,
        else ``fault``'s."""
        keys = ([outcome] if outcome else []) + list(FALLBACK_KEYS)
        for key in keys:
            text = self._by_key.get(key)
            clip = self._clips.get(text) if text is not None else None
            clip = clip or self._stand_ins.get(key)
            if clip is not None:
                return clip
        return None

    def _render_later(self, text: str, outcome: str | None = None) -> None:
        if text in self._renders or not text.strip():
            return

        async def render() -> None:
            try:
                clip = await asyncio.to_thread(self._render_for_play, text, outcome)
                self._rendered_later(text, clip)
            except VoiceError as exc:
                log.error("background render of %r failed: %s", text, exc)
            finally:
                self._renders.pop(text, None)

        self._renders[text] = asyncio.create_task(render(), name="voice-render")

    def _rendered_later(self, text: str, clip: Path) -> None:
        """A background render is in: spoken from now on instead of what stood in for it,
        and the health no longer reports it unrendered."""
        self._clips[text] = clip
        self._stand_ins = {k: p for k, p in self._stand_ins.items() if self._by_key.get(k) != text}
        if text in self._unrendered:
            self._unrendered.discard(text)
            self.unrendered = len(self._unrendered)
            error = self.last_error
            if not self._unrendered and error and error.startswith("prompts not rendered"):
                self.last_error = None  # the set is whole now

    def _render_for_play(self, text: str, outcome: str | None = None) -> Path:
        """Render ``text`` and make its volume copies (blocks: a background render's job),
        so that the tap that first plays it under a schedule only looks its copy up: making
        it then loads the audio stack, which takes longer than the play timeout. A text
        for an outcome (a site's own words, from the server) is joined with the second
        language too, so a foreign card holder at that site still hears it."""
        clip = self.renderer.render(text)
        self.prepare_volume([clip])
        second = self.second_language
        if second is not None and outcome is not None:
            before = set(second.clips.values())
            second.prepare({outcome: text}, {text: clip})  # never raises
            self.prepare_volume(set(second.clips.values()) - before)
        return clip

    def prepare_volume(self, clips: Iterable[Path], schedule: VolumeSchedule | None = None) -> None:
        """Make each clip's copy for every gain of the schedule (this voice's, or the one
        given) (blocks: call it from a thread), so that playing at 22:00 finds its quieter
        copy made. Never raises."""
        if self.volume_dir is None:
            return
        schedule = schedule if schedule is not None else self.schedule
        for clip in set(clips):
            for gain in sorted(schedule.gains()):
                try:
                    apply_gain(clip, gain, self.volume_dir)
                except VoiceError as exc:
                    log.warning("no %+g dB copy of prompt %s: %s", gain, clip.name, exc)

    def _schedule_usable(self) -> bool:
        """Whether the volume schedule may be applied now (on the loop: ClockTrust is not
        thread-safe); logged once each time that changes."""
        usable = self.clock_trusted is None or not self.schedule.gains() or self.clock_trusted()
        if usable == self._schedule_held:
            self._schedule_held = not usable
            if not usable:
                log.warning("volume schedule held: the kiosk's clock is not trusted, so "
                            "prompts play at full level until it is")  # fmt: skip
            else:
                log.info("volume schedule applied again: the kiosk's clock is trusted")
        return usable

    def _play_and_time(
        self, clip: Path, text: str, outcome: str | None, scheduled: bool = True
    ) -> float:
        gain = self.schedule.gain_db(datetime.now()) if scheduled else 0.0
        if gain and self.volume_dir is not None:
            try:
                clip = apply_gain(clip, gain, self.volume_dir)
            except VoiceError as exc:  # too loud beats silent
                log.error("volume schedule not applied to %s: %s", clip.name, exc)
        self.player.play_for(clip, text, outcome)
        return time.monotonic()

    async def _call_player(
        self, fn: Callable[[], _T], timeout: float, what: str, *, exclusive: bool = False
    ) -> _T:
        """Run a player call on a daemon thread; give up waiting after ``timeout``.

        A daemon thread rather than the loop's executor: a call that never returns must not
        hold an executor worker or block interpreter exit. ``exclusive`` calls (play) are
        refused while an earlier one is still stuck, so a wedged device costs one thread,
        not one per tap.
        """
        previous = self._player_done
        if exclusive and previous is not None and not previous.is_set():
            log.error("audio player still stuck in an earlier call; not calling %s", what)
            raise PlayerError(f"audio player still stuck in an earlier call; {what} refused")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()

        def settle(result: _T | None, error: BaseException | None) -> None:
            if future.done():  # the caller gave up (timeout or cancellation)
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        done = threading.Event()

        def run() -> None:
            result: _T | None = None
            error: BaseException | None = None
            try:
                result = fn()
            except Exception as exc:
                error = exc
            finally:
                # Before settling: once the caller resumes, the player counts as free.
                done.set()
            with contextlib.suppress(RuntimeError):  # loop already closed: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        thread = threading.Thread(target=run, name=f"voice-{what}", daemon=True)
        if exclusive:
            self._player_done = done
        thread.start()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            log.error("audio player %s did not return within %g s", what, timeout)
            raise PlayerError(f"audio player {what} did not return within {timeout:g} s") from None
        except PlayerError as exc:
            log.error("audio player %s failed: %s", what, exc)
            raise
        except Exception as exc:
            log.error("audio player %s failed: %s", what, exc)
            raise PlayerError(f"audio player {what} failed: {exc}") from exc


if __name__ == "__main__":
    sys.exit(main())
