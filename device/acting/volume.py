"""The site's volume schedule, applied by the player (issue 16, part 2).

Every prompt is rendered or loaded once at one loudness (:mod:`device.acting.audio`). A site
that wants the kiosk quieter at night (after 22:00 near flats, say) must not re-render or
re-normalise anything for it: that would put synthesis back into the tap's time and let the
night level drift from the day level. So the schedule is only a gain in dB per time of day,
and :func:`apply_gain` turns a normalised clip into a scaled copy just before it is played.
A copy is made once per clip and gain and then reused, so a tap pays a file lookup.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Final

from core.settings import HHMM_PATTERN
from device.errors import VoiceError

__all__ = ["VolumeSchedule", "VolumeWindow", "apply_gain", "parse_hhmm", "volume_copy"]

#: ``"HH:MM"`` on a 24-hour clock (``"00:00"`` .. ``"23:59"``): the rule the remote
#: ``voice.volume_schedule`` is checked by (core.settings), which config.py applies too.
_HHMM: Final = re.compile(HHMM_PATTERN)


def parse_hhmm(text: str) -> time:
    """``"22:30"`` as a :class:`~datetime.time`; ValueError names anything else."""
    if not _HHMM.fullmatch(text):
        raise ValueError(f"expected a time of day as HH:MM (00:00 .. 23:59), got {text!r}")
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


@dataclass(frozen=True)
class VolumeWindow:
    """From ``start`` (included) to ``end`` (excluded), prompts play ``gain_db`` louder.

    A window whose end is before its start wraps midnight (22:00-07:00 is the night); one
    whose end equals its start is the whole day.
    """

    start: time
    end: time
    gain_db: float

    @classmethod
    def parse(cls, start: str, end: str, gain_db: float) -> VolumeWindow:
        """A window from configuration text (``"22:00"``, ``"07:00"``, ``-10.0``)."""
        return cls(parse_hhmm(start), parse_hhmm(end), float(gain_db))

    def contains(self, moment: time) -> bool:
        """Whether ``moment`` (a wall-clock time, seconds included) falls in the window."""
        moment = moment.replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= moment < self.end
        if self.start > self.end:  # wraps midnight
            return moment >= self.start or moment < self.end
        return True


class VolumeSchedule:
    """The gain in dB that applies at a time of day: the first window containing it, else 0.

    Windows are given as ``(start, end, gain_db)`` with ``"HH:MM"`` times, or as
    :class:`VolumeWindow`; where windows overlap, the first one listed wins, so a site can put
    a short exception (a quiet hour) before a broad window.
    """

    def __init__(self, windows: Iterable[VolumeWindow | tuple[str, str, float]] = ()) -> None:
        self.windows: tuple[VolumeWindow, ...] = tuple(
            w if isinstance(w, VolumeWindow) else VolumeWindow.parse(*w) for w in windows
        )

    def gain_db(self, now: datetime | None = None) -> float:
        """The gain at ``now`` (default: the kiosk's local time now).

        An aware ``now`` is read in its own time zone: the schedule is the site's wall clock.
        """
        moment = (now if now is not None else datetime.now()).time()
        for window in self.windows:
            if window.contains(moment):
                return window.gain_db
        return 0.0

    def gains(self) -> frozenset[float]:
        """Every non-zero gain the schedule can ask for (to prepare copies at start)."""
        return frozenset(w.gain_db for w in self.windows if w.gain_db != 0.0)

    def __repr__(self) -> str:
        parts = ", ".join(f"{w.start:%H:%M}-{w.end:%H:%M} {w.gain_db:+g} dB" for w in self.windows)
        return f"VolumeSchedule([{parts}])"


def apply_gain(path: Path, gain_db: float, scratch_dir: Path) -> Path:
    """``path`` itself at 0 dB, else a copy of it ``gain_db`` louder (quieter if negative).

    The copy lives in ``scratch_dir`` under a name made of the clip's path, size and
    modification time and the gain, so it is made once per clip and gain and a clip that is
    rewritten (new words, new recording) gets a new copy. It is written under a temporary
    name and renamed, so a player never gets half a file, and two threads making the same
    copy at once both end with a whole one. The clip is only scaled: it keeps its
    normalisation, and nothing is re-rendered. VoiceError if ``path`` cannot be read.
    """
    if gain_db == 0.0:
        return path
    target = _copy_path(path, gain_db, scratch_dir)
    if target.is_file():
        return target
    # Only on a miss: the audio stack takes a second or more to import (scipy).
    from device.acting import audio

    clip = audio.load_clip(path)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp.wav")
    try:
        audio.save_wav(audio.with_gain(clip, gain_db), tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def volume_copy(path: Path, gain_db: float, scratch_dir: Path) -> Path:
    """Where :func:`apply_gain` keeps (or would keep) ``path``'s copy at ``gain_db``, made
    or not (the voice keeps these when it prunes its cache); ``path`` itself at 0 dB."""
    if gain_db == 0.0:
        return path
    return _copy_path(path, gain_db, scratch_dir)


def _copy_path(path: Path, gain_db: float, scratch_dir: Path) -> Path:
    try:
        info = path.stat()
    except OSError as exc:
        raise VoiceError(f"prompt clip {path} cannot be read: {exc}") from exc
    key = f"{path.resolve()}|{info.st_size}|{info.st_mtime_ns}|{gain_db:.3f}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return scratch_dir / f"{path.stem[:16]}-{digest}{gain_db:+.1f}dB.wav"
