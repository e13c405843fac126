"""Recorded clips: real WAV/FLAC/OGG files checked, normalised and cached; bad ones left out."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyloudnorm
import pytest
import soundfile

from device.acting.clips import ClipLibrary, clip_key, split_key
from device.acting.voice import check_wav

ROOT = Path(__file__).resolve().parents[2]
TARGET_LUFS = -20.0
PEAK_DBFS = -1.0

Samples = npt.NDArray[np.float64]


def speech_like(seconds: float, rate: int, *, level: float = 0.3, seed: int = 1) -> Samples:
    """A voiced 140 Hz tone with harmonics, syllables at 4 Hz and a little breath noise:
    close enough to speech for loudness gating and silence trimming to behave as on a
    recording."""
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12) if 140 * k < rate / 2)
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2
    noise = np.random.default_rng(seed).normal(0, 0.05, t.size)
    signal = (np.asarray(voice) * syllables + noise) * level
    return np.asarray(signal / np.max(np.abs(signal)) * level, dtype=np.float64)


def write(path: Path, samples: Samples, rate: int, **kwargs: str) -> Path:
    soundfile.write(str(path), samples, rate, **kwargs)
    return path


def loudness(path: Path) -> float:
    samples, rate = soundfile.read(str(path), dtype="float64")
    return float(pyloudnorm.Meter(rate).integrated_loudness(samples))


def peak_dbfs(path: Path) -> float:
    samples, _ = soundfile.read(str(path), dtype="float64")
    return float(20 * np.log10(np.max(np.abs(samples))))


@pytest.fixture
def good(tmp_path: Path) -> dict[str, Path]:
    """Three good recordings at very different levels, rates and formats."""
    src = tmp_path / "src"
    src.mkdir()
    stereo = np.stack([speech_like(1.4, 44100, level=0.9), speech_like(1.4, 44100, seed=2)], 1)
    return {
        "pass": write(src / "pass.wav", speech_like(1.2, 16000, level=0.02), 16000),
        "check": write(src / "check.flac", stereo, 44100),
        "pass.en": write(src / "pass-en.ogg", speech_like(2.0, 22050, level=0.5), 22050),
    }


@pytest.fixture
def bad(tmp_path: Path) -> dict[str, Path]:
    """One of each way a recording can be unusable."""
    src = tmp_path / "bad"
    src.mkdir()
    corrupt = src / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(200)))
    return {
        "fault": write(src / "silent.wav", np.zeros(16000), 16000),
        "nat_expired": write(src / "long.flac", speech_like(3.0, 16000), 16000),
        "invalid_credential": corrupt,
        "check.en": src / "missing.wav",
    }


def library(clips: dict[str, Path], cache: Path) -> ClipLibrary:
    names = {key: str(path) for key, path in clips.items()}
    return ClipLibrary(names, cache, target_lufs=TARGET_LUFS, peak_dbfs=PEAK_DBFS)


def test_good_clips_load_normalised_into_the_cache(good: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    lib = library(good, cache)
    loaded = lib.load()
    assert set(loaded) == set(good)
    assert lib.problems == []
    assert lib.normalised == 3
    for key, wav in loaded.items():
        assert wav.parent == cache
        assert check_wav(wav) > 0.5, key
        assert soundfile.info(str(wav)).subtype == "PCM_16"
        assert soundfile.info(str(wav)).channels == 1
        assert abs(loudness(wav) - TARGET_LUFS) <= 0.5, key
        assert peak_dbfs(wav) <= PEAK_DBFS + 0.01, key


def test_the_levels_differ_before_and_agree_after(good: dict[str, Path], tmp_path: Path) -> None:
    before = [loudness(path) for path in good.values()]
    after = [loudness(path) for path in library(good, tmp_path / "cache").load().values()]
    assert max(before) - min(before) > 20
    assert max(after) - min(after) <= 1.0


def test_another_target_and_peak_are_honoured(good: dict[str, Path], tmp_path: Path) -> None:
    names = {key: str(path) for key, path in good.items()}
    lib = ClipLibrary(names, tmp_path / "cache", target_lufs=-28.0, peak_dbfs=-6.0)
    for wav in lib.load().values():
        assert abs(loudness(wav) - -28.0) <= 0.5
        assert peak_dbfs(wav) <= -6.0 + 0.01


def test_the_peak_limit_wins_over_the_target(good: dict[str, Path], tmp_path: Path) -> None:
    """A -6 LUFS target would push speech peaks past 0 dBFS: the limit holds them at -3."""
    names = {key: str(path) for key, path in good.items()}
    lib = ClipLibrary(names, tmp_path / "cache", target_lufs=-6.0, peak_dbfs=-3.0)
    for wav in lib.load().values():
        assert peak_dbfs(wav) <= -3.0 + 0.01


def test_a_second_start_uses_the_cache(good: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = library(good, cache).load()
    stamps = {key: path.stat().st_mtime_ns for key, path in first.items()}
    again = library(good, cache)
    assert again.load() == first
    assert again.normalised == 0
    assert {key: path.stat().st_mtime_ns for key, path in first.items()} == stamps
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in first.values())


def test_a_start_with_every_clip_cached_does_not_import_the_audio_stack(
    good: dict[str, Path], tmp_path: Path
) -> None:
    """scipy and pyloudnorm take a second or more to import: only a cache miss needs them."""
    cache = tmp_path / "cache"
    names = {key: str(path) for key, path in good.items()}
    first = library(good, cache).load()
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from device.acting.clips import ClipLibrary\n"
        "lib = ClipLibrary(json.loads(sys.argv[1]), Path(sys.argv[2]), target_lufs=-20.0)\n"
        "loaded = {k: str(p) for k, p in lib.load().items()}\n"
        "heavy = sorted({'device.acting.audio', 'pyloudnorm', 'scipy'} & set(sys.modules))\n"
        "print(json.dumps([loaded, lib.normalised, heavy]))\n"
    )
    argv = [sys.executable, "-c", code, json.dumps(names), str(cache)]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    loaded, normalised, heavy = json.loads(out.stdout)
    assert loaded == {key: str(path) for key, path in first.items()}
    assert normalised == 0
    assert heavy == []


def test_new_content_or_settings_make_a_new_clip(good: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = library(good, cache).load()
    write(good["pass"], speech_like(1.0, 16000, seed=7), 16000)
    second = library(good, cache)
    assert second.load()["pass"] != first["pass"]
    assert second.normalised == 1
    names = {key: str(path) for key, path in good.items()}
    louder = ClipLibrary(names, cache, target_lufs=-16.0, peak_dbfs=PEAK_DBFS).load()
    assert set(louder.values()).isdisjoint(first.values())


def test_leading_and_trailing_silence_is_trimmed(tmp_path: Path) -> None:
    rate = 16000
    quiet = np.zeros(int(0.4 * rate))
    padded = np.concatenate([quiet, speech_like(1.0, rate), quiet])
    source = write(tmp_path / "padded.wav", padded, rate)
    wav = library({"pass": source}, tmp_path / "cache").load()["pass"]
    samples, out_rate = soundfile.read(str(wav), dtype="float64")
    audible = np.flatnonzero(np.abs(samples) > 10 ** (-45 / 20))
    assert audible[0] / out_rate <= 0.030
    assert (samples.size - audible[-1]) / out_rate <= 0.030
    assert samples.size / out_rate == pytest.approx(1.0, abs=0.05)


def test_each_bad_clip_is_left_out_with_a_warning(
    good: dict[str, Path], bad: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="device.acting.clips")
    lib = library({**good, **bad}, tmp_path / "cache")
    loaded = lib.load()
    assert set(loaded) == set(good)
    reasons = {p.key: p.reason for p in lib.problems}
    assert set(reasons) == set(bad)
    assert "silent" in reasons["fault"]
    assert "too long" in reasons["nat_expired"] and "3.0 s" in reasons["nat_expired"]
    assert "not found" in reasons["check.en"]
    assert reasons["invalid_credential"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(bad)
    for key, path in bad.items():
        (message,) = [r.getMessage() for r in warnings if str(path) in r.getMessage()]
        assert reasons[key] in message
        assert "synthesised instead" in message
    assert {p.path for p in lib.problems} == {str(p) for p in bad.values()}


def test_bad_clips_leave_nothing_in_the_cache(bad: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    lib = library(bad, cache)
    assert lib.load() == {}
    assert lib.normalised == 0
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_bad_clip_is_checked_again_at_the_next_start(
    bad: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    library(bad, cache).load()
    again = library(bad, cache)
    assert again.load() == {}
    assert len(again.problems) == len(bad)


def test_a_key_that_names_no_outcome_is_left_out(good: dict[str, Path], tmp_path: Path) -> None:
    lib = library(
        {"pass": good["pass"], "welcome": good["check"], "pass.EN": good["pass"]}, tmp_path
    )
    assert set(lib.load()) == {"pass"}
    assert {p.key for p in lib.problems} == {"welcome", "pass.EN"}


def test_a_directory_is_not_a_clip(tmp_path: Path) -> None:
    lib = library({"pass": tmp_path}, tmp_path / "cache")
    assert lib.load() == {}
    assert "cannot read" in lib.problems[0].reason


def test_keys() -> None:
    assert split_key("pass") == ("pass", "")
    assert split_key("nat_expired.en") == ("nat_expired", "en")
    assert clip_key("pass", "en") == "pass.en"
    assert clip_key("pass") == "pass"
    for wrong in ("", "pass.", "pass.en.us", "Pass", "generic", "pass.english"):
        with pytest.raises(ValueError, match="clip key"):
            split_key(wrong)
