"""Voice with the site's recorded clips and volume schedule (issue 16, parts 1 and 2)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile

from device.acting.clips import ClipLibrary
from device.acting.voice import FileSinkPlayer, PromptRenderer, Voice
from device.acting.volume import VolumeSchedule

PROMPTS = {"pass": "绿码通行", "check": "非绿码请核查", "fault": "设备故障，请联系工作人员"}
ALL_DAY_QUIETER = VolumeSchedule([("00:00", "00:00", -10.0)])


def recording(path: Path, seconds: float = 1.2, rate: int = 22050) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    soundfile.write(str(path), samples, rate, format="FLAC")
    return path


def pcm(path: Path) -> np.ndarray:
    samples, _ = soundfile.read(str(path), dtype="float64")
    return np.asarray(samples)


@pytest.fixture
def sink(tmp_path: Path) -> FileSinkPlayer:
    return FileSinkPlayer(tmp_path / "sink")


async def test_a_recorded_clip_replaces_its_outcomes_prompt(
    shared_renderer: PromptRenderer, sink: FileSinkPlayer, tmp_path: Path
) -> None:
    clips = {"pass": str(recording(tmp_path / "pass.flac")), "check": str(tmp_path / "gone.wav")}
    library = ClipLibrary(clips, tmp_path / "cache")
    voice = Voice(shared_renderer, sink, PROMPTS, library=library)
    await voice.start()
    assert set(voice.recorded) == {"pass"}
    assert voice.clips[PROMPTS["pass"]] == voice.recorded["pass"]
    await voice.say(PROMPTS["pass"], outcome="pass")
    await voice.say("a site's own words", outcome="pass")  # the recording, whatever the text
    await voice.say(PROMPTS["check"], outcome="check")  # bad recording: synthesised
    played = sink.recorded()
    assert [p.name for p in played] == ["000001-pass.wav", "000002-pass.wav", "000003-check.wav"]
    assert played[0].read_bytes() == played[1].read_bytes() == voice.recorded["pass"].read_bytes()
    assert played[2].read_bytes() == shared_renderer.render(PROMPTS["check"]).read_bytes()
    await voice.close()


async def test_the_player_applies_the_schedules_gain(
    shared_renderer: PromptRenderer, sink: FileSinkPlayer, tmp_path: Path
) -> None:
    volume_dir = tmp_path / "volume"
    voice = Voice(shared_renderer, sink, PROMPTS, schedule=ALL_DAY_QUIETER, volume_dir=volume_dir)
    await voice.start()
    assert len(list(volume_dir.iterdir())) == len(PROMPTS)  # made at start, not at a tap
    await voice.say(PROMPTS["pass"], outcome="pass")
    (played,) = sink.recorded()
    original = pcm(shared_renderer.render(PROMPTS["pass"]))
    assert np.max(np.abs(pcm(played) - original * 10 ** (-10 / 20))) <= 2 / 32768
    await voice.close()


async def test_without_a_schedule_the_clip_plays_as_rendered(
    shared_renderer: PromptRenderer, sink: FileSinkPlayer, tmp_path: Path
) -> None:
    voice = Voice(shared_renderer, sink, PROMPTS, volume_dir=tmp_path / "volume")
    await voice.start()
    await voice.say(PROMPTS["pass"], outcome="pass")
    (played,) = sink.recorded()
    assert played.read_bytes() == shared_renderer.render(PROMPTS["pass"]).read_bytes()
    assert not (tmp_path / "volume").exists()
    await voice.close()


async def test_an_hour_long_recording_is_left_out_without_being_decoded(
    shared_renderer: PromptRenderer,
    sink: FileSinkPlayer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A misconfigured file (an hour of OGG, 150 kB of silence here, 1 GB as float32) is
    refused from its header, and the prompt is synthesised as for any bad clip."""
    long = tmp_path / "pass.ogg"
    with soundfile.SoundFile(str(long), "w", 8000, 1, format="OGG") as out:
        for _ in range(60):  # in blocks: libsndfile's Vorbis writer crashes on one huge call
            out.write(np.zeros(8000 * 60, dtype=np.float32))

    def no_decoding(*args: object, **kwargs: object) -> object:
        raise AssertionError("decoded")

    shared_renderer.prerender(PROMPTS.values())  # the synthesised prompts decode their renders
    monkeypatch.setattr(soundfile, "read", no_decoding)
    voice = Voice(
        shared_renderer, sink, PROMPTS, library=ClipLibrary({"pass": str(long)}, tmp_path)
    )
    await voice.start()
    assert voice.recorded == {}
    assert voice.clip_for(PROMPTS["pass"], "pass") == shared_renderer.path_for(PROMPTS["pass"])
    (problem,) = voice.health()["clip_problems"]
    assert problem.endswith("pass.ogg: too long: 3600.0 s > 30 s")
    await voice.close()


async def test_on_a_clock_nobody_vouches_for_the_schedule_waits(
    shared_renderer: PromptRenderer,
    sink: FileSinkPlayer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The schedule is local time: a Pi without a real-time clock booted offline must not
    play its daytime taps at the night level. Full level until the clock is trusted (once
    logged), the schedule again from then on."""
    trusted = False
    voice = Voice(
        shared_renderer, sink, PROMPTS, schedule=ALL_DAY_QUIETER, volume_dir=tmp_path / "v"
    )
    voice.clock_trusted = lambda: trusted
    await voice.start()
    rendered = shared_renderer.render(PROMPTS["pass"]).read_bytes()
    with caplog.at_level(logging.INFO, logger="device.acting.voice"):
        await voice.say(PROMPTS["pass"], outcome="pass")
        await voice.say(PROMPTS["pass"], outcome="pass")
        trusted = True
        await voice.say(PROMPTS["pass"], outcome="pass")
    first, second, third = sink.recorded()
    assert first.read_bytes() == second.read_bytes() == rendered  # full level
    assert third.read_bytes() != rendered  # the schedule's -10 dB again
    assert caplog.text.count("volume schedule held") == 1
    assert "volume schedule applied again" in caplog.text
    await voice.close()
