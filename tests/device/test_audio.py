"""Prompt audio maths: loading, checks, loudness, limiting, trimming and joining clips.

Generated tones pin the exact behaviour (a tone's loudness and peak are known); one real
espeak render (the session cache) checks that a spoken prompt comes out at the target.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile

from device.acting import audio
from device.acting.audio import Clip
from device.acting.voice import PromptRenderer, check_wav
from device.errors import VoiceError

RATE = 22050


def tone(seconds: float, *, dbfs: float = -12.0, freq: float = 440.0, rate: int = RATE) -> Clip:
    """A sine at ``dbfs`` sample peak."""
    t = np.arange(round(seconds * rate)) / rate
    return Clip((10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def silence(seconds: float, rate: int = RATE) -> Clip:
    return Clip(np.zeros(round(seconds * rate), dtype=np.float32), rate)


def joined(*clips: Clip) -> Clip:
    return Clip(np.concatenate([c.samples for c in clips]), clips[0].rate)


# --------------------------------------------------------------------------- Clip and files


def test_clip_is_float32_mono_read_only() -> None:
    clip = Clip(np.array([[0.0], [0.5], [-0.5]], dtype=np.float32), 8000)
    assert clip.samples.dtype == np.float32 and clip.samples.shape == (3,)
    assert clip.duration_s == pytest.approx(3 / 8000)
    with pytest.raises(ValueError):
        clip.samples[0] = 1.0
    with pytest.raises(ValueError, match="positive"):
        Clip(np.zeros(3, dtype=np.float32), 0)


def test_save_wav_is_16_bit_pcm_that_check_wav_accepts(tmp_path: Path) -> None:
    clip = tone(0.5)
    path = tmp_path / "a.wav"
    audio.save_wav(clip, path)
    info = soundfile.info(str(path))
    assert (info.subtype, info.channels, info.samplerate) == ("PCM_16", 1, RATE)
    assert check_wav(path) == pytest.approx(0.5)
    back = audio.load_clip(path)
    assert back.rate == RATE
    assert np.max(np.abs(back.samples - clip.samples)) < 1e-4  # 16-bit quantisation


@pytest.mark.parametrize(("name", "fmt"), [("s.flac", "FLAC"), ("s.ogg", "OGG")])
def test_stereo_flac_and_ogg_are_mixed_down(tmp_path: Path, name: str, fmt: str) -> None:
    left = tone(0.5, dbfs=-6.0).samples
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    soundfile.write(str(tmp_path / name), stereo, RATE, format=fmt)
    clip = audio.load_clip(tmp_path / name)
    assert clip.rate == RATE and clip.samples.ndim == 1
    assert clip.duration_s == pytest.approx(0.5, abs=0.01)
    assert audio.peak_dbfs(clip) == pytest.approx(-12.0, abs=0.5)  # half of one channel


def test_unreadable_files_are_voice_errors_naming_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "pass-zh.wav"
    junk.write_bytes(b"RIFF\x00\x00 definitely not audio" * 10)
    with pytest.raises(VoiceError, match=r"pass-zh\.wav"):
        audio.load_clip(junk)
    with pytest.raises(VoiceError, match=r"missing\.ogg"):
        audio.load_clip(tmp_path / "missing.ogg")


def test_a_long_file_is_refused_before_it_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ten-minute OGG is 40 kB of silence here (1 MB of speech) but 19 MB as float32 at
    8 kHz, 434 MB at 48 kHz stereo: its header is enough to refuse it."""
    long = tmp_path / "long.ogg"
    with soundfile.SoundFile(str(long), "w", 8000, 1, format="OGG") as out:
        for _ in range(600):  # in blocks: libsndfile's Vorbis writer crashes on one huge call
            out.write(np.zeros(8000, dtype=np.float32))
    short = tmp_path / "short.wav"
    audio.save_wav(tone(2.5), short)

    def no_decoding(*args: object, **kwargs: object) -> object:
        raise AssertionError("decoded")

    with monkeypatch.context() as patch:
        patch.setattr(soundfile, "read", no_decoding)
        with pytest.raises(VoiceError, match=r"^long\.ogg: too long: 600\.0 s > 30 s$"):
            audio.load_clip(long)
        with pytest.raises(VoiceError, match=r"^short\.wav: too long: 2\.5 s > 2\.4 s$"):
            audio.load_clip(short, max_duration_s=2.4)
    assert audio.load_clip(short, max_duration_s=2.5).duration_s == pytest.approx(2.5)


def test_a_header_that_under_counts_is_caught_while_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "liar.wav"
    audio.save_wav(tone(5.0), path)
    real_info = soundfile.info

    def one_second(file: str) -> object:
        info = real_info(file)
        info.frames = info.samplerate  # what a damaged or hostile header may claim
        return info

    monkeypatch.setattr(soundfile, "info", one_second)
    with pytest.raises(VoiceError, match=r"liar\.wav: too long: over 2\.5 s \(its header says"):
        audio.load_clip(path, max_duration_s=2.5)
    assert audio.load_clip(path, max_duration_s=6.0).duration_s == pytest.approx(5.0)


# --------------------------------------------------------------------------- checks


def test_problems_of_a_good_clip_are_none() -> None:
    assert audio.problems(tone(1.0)) == []


def test_too_long_names_both_durations() -> None:
    assert audio.problems(tone(2.8)) == ["too long: 2.8 s > 2.5 s"]
    assert audio.problems(tone(2.52)) == ["too long: 2.52 s > 2.5 s"]
    assert audio.problems(tone(2.8), max_duration_s=3.0) == []


def test_silent_and_too_short() -> None:
    assert audio.problems(silence(1.0)) == ["silent"]
    assert audio.problems(tone(1.0, dbfs=-60.0)) == ["silent"]
    assert audio.problems(tone(0.05)) == ["too short: 0.05 s < 0.1 s"]
    assert audio.problems(Clip(np.zeros(0, dtype=np.float32), RATE)) == [
        "too short: 0.00 s < 0.1 s",
        "silent",
    ]


# --------------------------------------------------------------------------- loudness


@pytest.mark.parametrize("dbfs", [-40.0, -20.0, -3.0])
def test_normalise_brings_any_level_to_the_target(dbfs: float) -> None:
    out = audio.normalise(tone(1.0, dbfs=dbfs))
    assert audio.loudness(out) == pytest.approx(-20.0, abs=0.05)
    assert audio.peak_dbfs(out) <= -1.0 + 1e-6


def test_normalise_target_is_configurable() -> None:
    out = audio.normalise(tone(1.0), target_lufs=-26.0, peak_dbfs=-3.0)
    assert audio.loudness(out) == pytest.approx(-26.0, abs=0.05)


def test_peaks_are_limited_without_losing_the_level() -> None:
    """Clicks on a quiet tone: scaling down for them would leave the clip 15 dB too quiet."""
    samples = tone(1.0, dbfs=-30.0).samples.copy()
    samples[::2205] = 0.9
    out = audio.normalise(Clip(samples, RATE), peak_dbfs=-1.0)
    assert audio.peak_dbfs(out) <= -1.0 + 1e-6
    assert audio.loudness(out) == pytest.approx(-20.0, abs=0.1)


def test_the_limiter_ramps_instead_of_stepping() -> None:
    """One loud burst in a steady tone: the gain eases down before it and back after it,
    and the rest of the clip is only scaled."""
    quiet, burst = tone(0.5, dbfs=-30.0), tone(0.003, dbfs=0.0)
    clip = joined(quiet, burst, quiet)
    out = audio.normalise(clip, peak_dbfs=-1.0)
    audible = np.abs(clip.samples) > 0.5 * 10 ** (-30 / 20)  # no ratios near zero crossings
    where = np.flatnonzero(audible)
    gain = out.samples[where] / clip.samples[where]
    overall = float(np.median(gain))
    start = len(quiet.samples)
    far = (where < start - 0.05 * RATE) | (where > start + len(burst.samples) + 0.05 * RATE)
    assert np.allclose(gain[far], overall, rtol=1e-4)
    lead_in = (where > start - 0.004 * RATE) & (where < start)
    assert (gain[lead_in] < overall * 0.999).any()  # the look-ahead: lowered before the burst
    assert gain.min() < 0.3 * overall  # the burst is held down by more than 10 dB ...
    assert np.abs(np.diff(gain)).max() < 0.2 * overall  # ... but not in a step
    assert audio.peak_dbfs(out) <= -1.0 + 1e-6


def test_a_clip_shorter_than_one_loudness_block_is_levelled() -> None:
    short = tone(0.2, dbfs=-35.0)
    assert math.isfinite(audio.loudness(short))
    out = audio.normalise(short)
    assert audio.loudness(out) == pytest.approx(-20.0, abs=0.05)
    assert out.duration_s == pytest.approx(0.2)


def test_silence_is_left_alone() -> None:
    quiet = silence(1.0)
    assert audio.loudness(quiet) == -math.inf
    assert audio.normalise(quiet) is quiet
    assert audio.peak_dbfs(quiet) == -math.inf


def test_with_gain_scales_and_clamps() -> None:
    clip = tone(0.5, dbfs=-12.0)
    assert audio.peak_dbfs(audio.with_gain(clip, -6.0)) == pytest.approx(-18.0, abs=0.01)
    loud = audio.with_gain(clip, 20.0)
    assert np.max(np.abs(loud.samples)) == pytest.approx(1.0)


# --------------------------------------------------------------------------- trim and join


def test_trim_cuts_both_ends_but_keeps_a_few_ms() -> None:
    clip = joined(silence(0.3), tone(1.0, dbfs=-6.0), silence(0.4))
    assert audio.stats(clip).leading_silence_ms == pytest.approx(300.0, abs=1.0)
    out = audio.trim_leading_silence(clip, keep_ms=5.0)
    assert audio.stats(out).leading_silence_ms <= 6.0
    assert out.duration_s == pytest.approx(1.01, abs=0.002)


def test_trim_leaves_a_clip_with_nothing_audible_unchanged() -> None:
    quiet = tone(0.5, dbfs=-60.0)
    assert audio.trim_leading_silence(quiet) is quiet


def test_concat_is_first_gap_second_sample_for_sample() -> None:
    first, second = tone(0.3, freq=300.0), tone(0.4, freq=500.0)
    out = audio.concat(first, second, gap_s=0.12)
    gap = round(0.12 * RATE)
    n = len(first.samples)
    assert np.array_equal(out.samples[:n], first.samples)
    assert not out.samples[n : n + gap].any()
    assert np.array_equal(out.samples[n + gap :], second.samples)


def test_concat_resamples_the_second_clip_to_the_first_rate() -> None:
    first, second = tone(0.3), tone(0.5, rate=16000)
    out = audio.concat(first, second, gap_s=0.1)
    assert out.rate == RATE
    assert out.duration_s == pytest.approx(0.9, abs=0.001)
    tail = Clip(out.samples[-round(0.5 * RATE) :], RATE)
    assert audio.peak_dbfs(tail) == pytest.approx(-12.0, abs=0.2)


# --------------------------------------------------------------------------- a real prompt


def test_a_real_prompt_prepared_meets_the_voice_targets(shared_renderer: PromptRenderer) -> None:
    """espeak's render, made 15 dB too quiet and padded, comes back level and tight."""
    spoken = audio.load_clip(shared_renderer.render("绿码通行"))
    padded = joined(silence(0.2, spoken.rate), audio.with_gain(spoken, -15.0))
    out = audio.prepare(padded, target_lufs=-20.0, peak_dbfs=-1.0)
    figures = audio.stats(out)
    assert figures.lufs == pytest.approx(-20.0, abs=0.1)
    assert figures.peak_dbfs <= -1.0 + 1e-6
    assert figures.leading_silence_ms <= 30.0
    assert audio.problems(out) == []
