"""The volume schedule (windows, midnight, boundaries) and the player-side gain copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile

from device.acting import audio
from device.acting.volume import VolumeSchedule, VolumeWindow, apply_gain, parse_hhmm
from device.errors import VoiceError

ROOT = Path(__file__).resolve().parents[2]
DAY = datetime(2026, 11, 28)


def at(hh: int, mm: int, ss: int = 0, *, micro: int = 0) -> datetime:
    return DAY.replace(hour=hh, minute=mm, second=ss, microsecond=micro)


NIGHT = VolumeSchedule([("22:00", "07:00", -10.0)])


@pytest.mark.parametrize(
    ("moment", "gain"),
    [
        (at(21, 59, 59, micro=999999), 0.0),
        (at(22, 0), -10.0),
        (at(23, 59, 59, micro=999999), -10.0),
        (at(0, 0), -10.0),
        (at(3, 30), -10.0),
        (at(6, 59, 59, micro=999999), -10.0),
        (at(7, 0), 0.0),
        (at(12, 0), 0.0),
    ],
)
def test_a_night_window_wraps_midnight(moment: datetime, gain: float) -> None:
    assert NIGHT.gain_db(moment) == gain


def test_a_day_window_includes_its_start_and_excludes_its_end() -> None:
    lunch = VolumeSchedule([("12:00", "13:30", -6.0)])
    assert lunch.gain_db(at(11, 59, 59)) == 0.0
    assert lunch.gain_db(at(12, 0)) == -6.0
    assert lunch.gain_db(at(13, 29, 59)) == -6.0
    assert lunch.gain_db(at(13, 30)) == 0.0
    assert lunch.gain_db(at(0, 0)) == 0.0


def test_a_window_ending_at_midnight() -> None:
    late = VolumeSchedule([("22:00", "00:00", -8.0)])
    assert late.gain_db(at(21, 59)) == 0.0
    assert late.gain_db(at(23, 59, 59)) == -8.0
    assert late.gain_db(at(0, 0)) == 0.0


def test_equal_start_and_end_is_the_whole_day() -> None:
    always = VolumeSchedule([("00:00", "00:00", -3.0)])
    for hour in range(24):
        assert always.gain_db(at(hour, 17)) == -3.0


def test_the_first_listed_window_wins_where_they_overlap() -> None:
    schedule = VolumeSchedule([("02:00", "03:00", -20.0), ("22:00", "07:00", -10.0)])
    assert schedule.gain_db(at(1, 59)) == -10.0
    assert schedule.gain_db(at(2, 30)) == -20.0
    assert schedule.gain_db(at(3, 0)) == -10.0
    assert schedule.gain_db(at(8, 0)) == 0.0
    assert schedule.gains() == frozenset({-20.0, -10.0})


def test_no_windows_is_full_volume() -> None:
    empty = VolumeSchedule()
    assert empty.gain_db(at(23, 0)) == 0.0
    assert empty.gains() == frozenset()
    assert isinstance(empty.gain_db(), float)


def test_an_aware_time_is_read_on_its_own_wall_clock() -> None:
    beijing = timezone(timedelta(hours=8))
    moment = datetime(2026, 11, 28, 14, 30, tzinfo=UTC)  # 22:30 in Beijing
    assert NIGHT.gain_db(moment.astimezone(beijing)) == -10.0
    assert NIGHT.gain_db(moment) == 0.0


def test_windows_given_as_objects_or_text_are_the_same() -> None:
    window = VolumeWindow(time(22), time(7), -10.0)
    assert VolumeSchedule([window]).windows == NIGHT.windows
    assert "22:00-07:00 -10 dB" in repr(NIGHT)


@pytest.mark.parametrize("text", ["24:00", "7:00", "07:60", "0700", "07:00:00", "", " 07:00"])
def test_a_time_that_is_not_hh_mm_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hhmm(text)
    with pytest.raises(ValueError, match="HH:MM"):
        VolumeSchedule([(text, "07:00", -10.0)])


# --------------------------------------------------------------------------- apply_gain


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """A normalised prompt as the renderer leaves it: 16-bit PCM mono WAV."""
    rate = 16000
    t = np.arange(int(1.5 * rate)) / rate
    samples = 0.6 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    path = tmp_path / "prompt.wav"
    soundfile.write(str(path), samples, rate, subtype="PCM_16")
    return path


def pcm(path: Path) -> np.ndarray:
    samples, _ = soundfile.read(str(path), dtype="int16")
    return np.asarray(samples, dtype=np.float64)


def test_zero_gain_plays_the_clip_itself(clip: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    assert apply_gain(clip, 0.0, scratch) == clip
    assert not scratch.exists()


@pytest.mark.parametrize("gain_db", [-6.0, -10.0, -20.0, -0.5])
def test_a_gain_scales_every_sample(clip: Path, tmp_path: Path, gain_db: float) -> None:
    copy = apply_gain(clip, gain_db, tmp_path / "scratch")
    assert copy != clip and copy.parent == tmp_path / "scratch"
    before, after = pcm(clip), pcm(copy)
    assert after.shape == before.shape
    assert soundfile.info(str(copy)).samplerate == soundfile.info(str(clip)).samplerate
    # Exactly the factor, to within one step of 16-bit rounding per sample.
    assert np.max(np.abs(after - before * 10 ** (gain_db / 20))) <= 1.0
    loudest = int(np.argmax(np.abs(before)))
    assert after[loudest] / before[loudest] == pytest.approx(10 ** (gain_db / 20), rel=1e-3)


def test_a_copy_is_made_once_per_clip_and_gain(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    first = apply_gain(clip, -10.0, scratch)
    stamp = first.stat().st_mtime_ns

    def no_decoding(path: Path) -> audio.Clip:
        raise AssertionError("a cached copy was rendered again")

    monkeypatch.setattr(audio, "load_clip", no_decoding)
    assert apply_gain(clip, -10.0, scratch) == first
    assert first.stat().st_mtime_ns == stamp
    monkeypatch.undo()
    other = apply_gain(clip, -20.0, scratch)
    assert other != first
    assert sorted(scratch.iterdir()) == sorted([first, other])


def test_a_cached_copy_needs_no_audio_stack(clip: Path, tmp_path: Path) -> None:
    """The player's path at a tap: scipy and pyloudnorm (a second or more) stay unloaded."""
    first = apply_gain(clip, -10.0, tmp_path / "scratch")
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from device.acting.volume import VolumeSchedule, apply_gain\n"
        "gain = VolumeSchedule([('00:00', '00:00', -10.0)]).gain_db()\n"
        "copy = apply_gain(Path(sys.argv[1]), gain, Path(sys.argv[2]))\n"
        "heavy = sorted({'device.acting.audio', 'pyloudnorm', 'scipy'} & set(sys.modules))\n"
        "print(json.dumps([str(copy), heavy]))\n"
    )
    argv = [sys.executable, "-c", code, str(clip), str(tmp_path / "scratch")]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == [str(first), []]


def test_a_rewritten_clip_gets_a_new_copy(clip: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    first = apply_gain(clip, -10.0, scratch)
    soundfile.write(str(clip), np.full(8000, 0.5), 16000, subtype="PCM_16")
    os.utime(clip, ns=(1, 1))  # a different modification time even on a coarse clock
    second = apply_gain(clip, -10.0, scratch)
    assert second != first
    assert pcm(second).shape == (8000,)
    assert np.max(np.abs(pcm(second) - 0.5 * 32767 * 10 ** (-10 / 20))) <= 2.0


def test_a_missing_clip_is_a_voice_error(tmp_path: Path) -> None:
    with pytest.raises(VoiceError, match=r"missing\.wav"):
        apply_gain(tmp_path / "missing.wav", -10.0, tmp_path / "scratch")
