"""Recorded prompt clips that replace synthesis (issue 16, part 1).

A site may record its own words (``[voice.clips]``: ``pass = "/etc/siheyi/clips/pass.flac"``,
``"pass.en" = ".../pass-en.wav"``). A recorded clip is only worth playing if it is whole,
short enough that a tap every 3 s never cuts it off, and not silent; a kiosk in the field
cannot ask anyone about a bad file, so :class:`ClipLibrary` checks every file once, at start,
and leaves a bad one out with a warning that names it: that prompt is then synthesised as
before, and the gate keeps talking.

A good clip is trimmed of leading and trailing silence (time to first sound) and normalised
to the same loudness target and peak limit as the synthesised prompts, then written as a
16-bit PCM WAV (what the players play) into the prompt cache under a name made of the
file's content and the settings. The next start finds it there and decodes nothing (nor
imports the audio stack).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

from core.outcomes import ALL_OUTCOMES
from core.voicepack import KEY_PATTERN
from device.errors import VoiceError

if TYPE_CHECKING:
    from device.acting import audio

__all__ = ["ClipLibrary", "ClipProblem", "clip_key", "split_key"]

log = logging.getLogger(__name__)

#: A clip key (``pass``, ``pass.en``): the rule a voice pack's keys follow (core.voicepack).
_KEY: Final = re.compile(KEY_PATTERN)

#: A prompt file larger than this is refused before it is decoded: 2.5 s of audio is at
#: most a few MB even at 192 kHz in 8 channels, and a misconfigured hour-long recording
#: must not cost the kiosk its memory at start.
MAX_FILE_BYTES: Final = 16 * 1024 * 1024

_CHUNK: Final = 1 << 16
_FORMAT: Final = "v1"  # bump when the processing changes, so old cached clips are not used


class ClipProblem(NamedTuple):
    """A configured clip left out, and why (for the log, the doctor and the heartbeat)."""

    key: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key} = {self.path}: {self.reason}"


def clip_key(outcome: str, language: str = "") -> str:
    """The key of an outcome's clip in a language (``""``: the site's first language)."""
    return f"{outcome}.{language}" if language else outcome


def split_key(key: str) -> tuple[str, str]:
    """``"pass.en"`` as ``("pass", "en")``, ``"pass"`` as ``("pass", "")``; ValueError for
    a key that names no outcome."""
    match = _KEY.fullmatch(key)
    if match is None:
        outcomes = ", ".join(sorted(ALL_OUTCOMES))
        raise ValueError(f"clip key {key!r}: expected <outcome> or <outcome>.<lang> ({outcomes})")
    return match[1], (match[2] or "")[1:]


class ClipLibrary:
    """The site's recorded clips, checked and normalised into the prompt cache.

    ``clips`` maps a key (:func:`split_key`) to an audio file (WAV, FLAC or OGG; a relative
    path is taken from the agent's working directory). :meth:`load` returns the usable ones
    as ``key -> cached WAV``; :attr:`problems` lists the others. ``normalised`` counts the
    clips actually decoded and processed (cache misses).
    """

    def __init__(
        self,
        clips: Mapping[str, str],
        cache_dir: Path,
        *,
        target_lufs: float = -20.0,
        peak_dbfs: float = -1.0,
        max_duration_s: float = 2.5,
    ) -> None:
        self.clips = dict(clips)
        self.cache_dir = Path(cache_dir)
        self.target_lufs = float(target_lufs)
        self.peak_dbfs = float(peak_dbfs)
        self.max_duration_s = float(max_duration_s)
        self.problems: list[ClipProblem] = []
        self.normalised = 0

    def load(self) -> dict[str, Path]:
        """Check every configured clip once; return ``key -> cached, normalised WAV``.

        Blocks for file I/O and decoding (tens of ms per clip on a miss): call it at start,
        off the event loop. Never raises for a bad clip: it is left out with a WARNING
        naming the file and the reason, and recorded in :attr:`problems`.
        """
        self.problems = []
        ready: dict[str, Path] = {}
        for key, name in self.clips.items():
            try:
                split_key(key)
                ready[key] = self._prepare(Path(name).expanduser())
            except (ValueError, VoiceError) as exc:
                self.problems.append(ClipProblem(key, name, str(exc)))
                log.warning(
                    "recorded clip %s (%s) left out, its prompt is synthesised instead: %s",
                    name,
                    key,
                    exc,
                )
        return ready

    def check(self) -> tuple[set[str], list[ClipProblem]]:
        """(keys whose clip :meth:`load` would use, the others and why), reading the files
        and writing nothing: what ``kiosk doctor`` reports, often run as root, which must
        not leave files in the agent's cache."""
        good: set[str] = set()
        problems: list[ClipProblem] = []
        for key, name in self.clips.items():
            try:
                split_key(key)
                source = Path(name).expanduser()
                self._digest(source)  # the size limit and readability, as load() meets them
                self._decoded(source)
            except (ValueError, VoiceError) as exc:
                problems.append(ClipProblem(key, name, str(exc)))
            else:
                good.add(key)
        return good, problems

    def _decoded(self, source: Path) -> audio.Clip:
        """The clip as recorded; VoiceError when unreadable, too long, too short or silent."""
        # Only now: the audio stack (scipy via pyloudnorm) takes a second or more to import,
        # which a start that finds every clip cached need not pay.
        from device.acting import audio

        clip = audio.load_clip(source)
        found = audio.problems(clip, max_duration_s=self.max_duration_s)
        if found:
            raise VoiceError("; ".join(found))
        return clip

    def _prepare(self, source: Path) -> Path:
        """The cached WAV for ``source``, made on the first start that sees this content."""
        target = self.cache_dir / f"clip-{self._digest(source)}.wav"
        if target.is_file():
            return target
        from device.acting import audio

        clip = self._decoded(source)
        clip = audio.prepare(clip, target_lufs=self.target_lufs, peak_dbfs=self.peak_dbfs)
        self._write(clip, target)
        self.normalised += 1
        return target

    def _digest(self, source: Path) -> str:
        """A hash of the file's bytes and of every setting that changes the result."""
        digest = hashlib.sha256(
            f"{_FORMAT}|{self.target_lufs:.2f}|{self.peak_dbfs:.2f}|{self.max_duration_s:.3f}|".encode()
        )
        try:
            if source.stat().st_size > MAX_FILE_BYTES:
                raise VoiceError(f"too large: over {MAX_FILE_BYTES // (1024 * 1024)} MB")
            with source.open("rb") as file:
                while chunk := file.read(_CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            raise VoiceError("file not found") from None
        except OSError as exc:
            raise VoiceError(f"cannot read: {exc.strerror or exc}") from exc
        return digest.hexdigest()[:40]

    def _write(self, clip: audio.Clip, target: Path) -> None:
        """Write ``target`` whole or not at all (a temporary file renamed over it)."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp.wav")
        from device.acting import audio

        try:
            audio.save_wav(clip, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            raise VoiceError(f"cannot write the normalised clip to {target}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
