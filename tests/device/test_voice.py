"""Prompts: real espeak renders, the cache, players and the non-blocking Voice facade."""

from __future__ import annotations

import array
import asyncio
import hashlib
import logging
import math
import os
import shutil
import stat
import sys
import time
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from core.outcomes import DEFAULT_PROMPTS
from device.acting import audio
from device.acting.voice import (
    MAX_PROMPT_S,
    AplayPlayer,
    FileSinkPlayer,
    MockPlayer,
    NullPlayer,
    Player,
    PromptRenderer,
    Voice,
    check_wav,
    make_player,
)
from device.errors import PlayerError, VoiceError

PASS_TEXT = "绿码通行"
PROMPTS = {
    "pass": PASS_TEXT,
    "check": "非绿码请核查",
    "fault": "设备故障，请联系工作人员",
}


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def fake_aplay(tmp_path: Path) -> tuple[Path, Path]:
    """An 'aplay' that records its pid and argv, then 'plays' for 30 s."""
    log = tmp_path / "aplay.log"
    command = script(tmp_path / "fake-aplay", f'echo "$$ $*" >> "{log}"\nexec sleep 30')
    return command, log


def log_lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def amplitude(path: Path) -> tuple[int, float]:
    """Peak and RMS of a 16-bit PCM WAV, computed by hand."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2
        samples = array.array("h", wav.readframes(wav.getnframes()))
    if sys.byteorder == "big":
        samples.byteswap()
    peak = max(abs(s) for s in samples)
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    return peak, rms


# --------------------------------------------------------------------------- renderer


def test_real_render_is_a_valid_non_silent_wav(tmp_path: Path) -> None:
    renderer = PromptRenderer(tmp_path)
    clip = renderer.render(PASS_TEXT)
    key = f"{PASS_TEXT}|sit/cmn|170|-20|-1|fit2.5@340".encode()
    assert clip == tmp_path / f"{hashlib.sha256(key).hexdigest()}.wav"
    assert check_wav(clip) > 0.3
    peak, rms = amplitude(clip)
    assert peak > 3000 and rms > 300
    assert [p.name for p in tmp_path.iterdir()] == [clip.name]  # no temporary left


def test_cache_hit_does_not_render_again(tmp_path: Path) -> None:
    renderer = PromptRenderer(tmp_path)
    clip = renderer.render(PASS_TEXT)
    mtime = clip.stat().st_mtime_ns
    t0 = time.monotonic()
    assert renderer.render(PASS_TEXT) == clip
    assert time.monotonic() - t0 < 0.05
    assert renderer.renders == 1
    assert clip.stat().st_mtime_ns == mtime
    assert PromptRenderer(tmp_path).cached(PASS_TEXT) == clip  # survives a restart


def test_rate_and_voice_are_part_of_the_key(tmp_path: Path) -> None:
    slow = PromptRenderer(tmp_path, rate=120).render(PASS_TEXT)
    fast = PromptRenderer(tmp_path, rate=260).render(PASS_TEXT)
    other = PromptRenderer(tmp_path, voice="sit/cmn-latn-pinyin").path_for(PASS_TEXT)
    assert len({slow, fast, other}) == 3
    assert check_wav(slow) > check_wav(fast)  # slower speech, longer clip


def test_broken_cache_file_is_rendered_again(tmp_path: Path) -> None:
    renderer = PromptRenderer(tmp_path)
    renderer.path_for(PASS_TEXT).write_bytes(b"RIFF....WAVE")
    assert renderer.cached(PASS_TEXT) is None
    assert check_wav(renderer.render(PASS_TEXT)) > 0.3
    assert renderer.renders == 1


def test_prerender_renders_the_good_ones_and_names_the_bad(tmp_path: Path) -> None:
    renderer = PromptRenderer(tmp_path)
    with pytest.raises(VoiceError, match="empty"):
        renderer.prerender([PASS_TEXT, "  ", PROMPTS["check"], PASS_TEXT])
    assert renderer.renders == 2  # duplicates rendered once
    assert renderer.cached(PASS_TEXT) and renderer.cached(PROMPTS["check"])
    clips = renderer.prerender([PASS_TEXT, PROMPTS["check"]])
    assert set(clips) == {PASS_TEXT, PROMPTS["check"]} and renderer.renders == 2


def test_unknown_voice_is_reported_as_unavailable(tmp_path: Path) -> None:
    with pytest.raises(VoiceError, match="unavailable: voice 'xx/none' is not installed"):
        PromptRenderer(tmp_path, voice="xx/none").render(PASS_TEXT)
    assert list(tmp_path.iterdir()) == []


def test_missing_synthesiser_is_a_voice_error(tmp_path: Path) -> None:
    renderer = PromptRenderer(tmp_path / "c", python=str(tmp_path / "no-python"))
    with pytest.raises(VoiceError, match="cannot start the prompt renderer"):
        renderer.render(PASS_TEXT)
    broken = script(tmp_path / "py", 'echo "pyttsx3 is not installed" >&2\nexit 3')
    with pytest.raises(VoiceError, match="unavailable: pyttsx3 is not installed"):
        PromptRenderer(tmp_path / "c", python=str(broken)).render(PASS_TEXT)


def test_hung_synthesis_is_killed(tmp_path: Path) -> None:
    hung = script(tmp_path / "py", "exec sleep 30")
    renderer = PromptRenderer(tmp_path / "c", python=str(hung), timeout_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(VoiceError, match="hung"):
        renderer.render(PASS_TEXT)
    assert time.monotonic() - t0 < 5
    assert list((tmp_path / "c").iterdir()) == []


def test_engine_output_without_audio_is_not_cached(tmp_path: Path) -> None:
    silent = script(tmp_path / "py", "exit 0")  # "succeeds" without writing anything
    renderer = PromptRenderer(tmp_path / "c", python=str(silent))
    with pytest.raises(VoiceError, match="not a readable WAV"):
        renderer.render(PASS_TEXT)
    assert list((tmp_path / "c").iterdir()) == []


def fake_engine(tmp_path: Path, *, seconds: float, amplitude: float) -> Path:
    """A 'python' whose render writes a 440 Hz tone (or silence) WAV where --out says."""
    engine = tmp_path / "engine.py"
    engine.write_text(
        "import math, struct, sys, wave\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        f"n = int({seconds} * 16000)\n"
        f"data = [int({amplitude} * 32767 * math.sin(2 * math.pi * 440 * i / 16000))"
        " for i in range(n)]\n"
        "with wave.open(out, 'wb') as w:\n"
        "    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)\n"
        "    w.writeframes(struct.pack(f'<{n}h', *data))\n"
    )
    return script(tmp_path / "py", f'exec "{sys.executable}" "{engine}" "$@"')


def test_rendered_prompts_are_level_and_start_at_once(shared_renderer: PromptRenderer) -> None:
    """Real espeak renders come out of the cache at the target level, trimmed."""
    figures = [
        audio.stats(audio.load_clip(shared_renderer.render(text)))
        for text in (PASS_TEXT, PROMPTS["check"])
    ]
    for clip in figures:
        assert clip.lufs == pytest.approx(-20.0, abs=0.1)
        assert clip.peak_dbfs <= -1.0 + 1e-3  # 16-bit rounding
        assert clip.leading_silence_ms <= 30.0
    assert abs(figures[0].lufs - figures[1].lufs) <= 0.2


def test_loudness_target_and_peak_join_the_key(tmp_path: Path) -> None:
    quiet = PromptRenderer(tmp_path, loudness_lufs=-26.0, peak_dbfs=-6.0)
    default = PromptRenderer(tmp_path)
    other_peak = PromptRenderer(tmp_path, peak_dbfs=-3.0)
    assert len({quiet.path_for(PASS_TEXT), default.path_for(PASS_TEXT)}) == 2
    assert other_peak.path_for(PASS_TEXT) != default.path_for(PASS_TEXT)
    figures = audio.stats(audio.load_clip(quiet.render(PASS_TEXT)))
    assert figures.lufs == pytest.approx(-26.0, abs=0.1)
    assert figures.peak_dbfs <= -6.0 + 1e-3


def test_a_level_above_full_scale_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="peak"):
        PromptRenderer(tmp_path, peak_dbfs=1.0)
    with pytest.raises(ValueError, match="finite"):
        PromptRenderer(tmp_path, loudness_lufs=math.nan)


def test_engine_output_of_silence_is_not_cached(tmp_path: Path) -> None:
    renderer = PromptRenderer(
        tmp_path / "c", python=str(fake_engine(tmp_path, seconds=1.0, amplitude=0.0))
    )
    with pytest.raises(VoiceError, match="no usable audio: silent"):
        renderer.render(PASS_TEXT)
    assert renderer.attempts == 3 and renderer.renders == 0
    assert list((tmp_path / "c").iterdir()) == []


def test_a_prompt_longer_than_a_tap_is_spoken_again_faster_to_fit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The default fault prompt (4.8 s at 170 wpm from espeak-ng) is re-spoken so that it
    ends before the next tap; the clip in the cache is the fitted one."""
    fault = DEFAULT_PROMPTS["fault"]
    renderer = PromptRenderer(tmp_path / "c")
    with caplog.at_level(logging.INFO, logger="device.acting.voice"):
        clip = renderer.render(fault)
    assert "spoken at" in caplog.text and "even at" not in caplog.text
    assert check_wav(clip) <= MAX_PROMPT_S
    assert renderer.renders == 1 and renderer.attempts >= 2  # more if the engine wrote nothing
    slow = PromptRenderer(tmp_path / "slow", max_duration_s=None)
    assert check_wav(slow.render(fault)) > MAX_PROMPT_S + 1.0  # what it was without fitting


def test_a_fitted_render_far_longer_than_its_rate_gives_is_rendered_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An engine that now and then writes a render far longer than its rate gives (seen
    under load: 4.04 s where 2.4 s was due) does not leave a prompt the next tap cuts off."""
    lengths = tmp_path / "lengths"
    lengths.write_text("4.8 4.0 2.4", encoding="utf-8")  # at 170 wpm, then twice at 340
    engine = tmp_path / "engine.py"
    engine.write_text(
        "import math, struct, sys, wave\n"
        f"path = {str(lengths)!r}\n"
        "first, *rest = open(path).read().split()\n"
        "open(path, 'w').write(' '.join(rest))\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "n = int(float(first) * 16000)\n"
        "data = [int(0.3 * 32767 * math.sin(2 * math.pi * 440 * i / 16000)) for i in range(n)]\n"
        "with wave.open(out, 'wb') as w:\n"
        "    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)\n"
        "    w.writeframes(struct.pack(f'<{n}h', *data))\n"
    )
    python = script(tmp_path / "py", f'exec "{sys.executable}" "{engine}" "$@"')
    renderer = PromptRenderer(tmp_path / "c", python=str(python))
    with caplog.at_level(logging.WARNING, logger="device.acting.voice"):
        clip = renderer.render("很长的提示")
    assert check_wav(clip) == pytest.approx(2.4, abs=0.05)
    assert renderer.attempts == 3 and "rendered again" in caplog.text
    assert "even at" not in caplog.text


def test_a_prompt_longer_than_a_tap_is_cached_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A quiet engine output that runs past a tap: levelled, cached, and warned about."""
    engine = fake_engine(tmp_path, seconds=2.8, amplitude=0.05)
    renderer = PromptRenderer(tmp_path / "c", python=str(engine))
    with caplog.at_level(logging.WARNING, logger="device.acting.voice"):
        clip = renderer.render("很长的提示")
    assert "lasts 2.80 s > 2.5 s" in caplog.text
    figures = audio.stats(audio.load_clip(clip))
    assert figures.lufs == pytest.approx(-20.0, abs=0.1)
    assert [p.name for p in (tmp_path / "c").iterdir()] == [clip.name]


def test_a_faster_render_that_writes_nothing_is_not_the_slow_one_again(tmp_path: Path) -> None:
    """The engine 'succeeds' at the faster rate without writing a file (once): the check
    must see no file, not the 4 s render left from the first rate, and try again."""
    engine = tmp_path / "engine.py"
    engine.write_text(
        "import math, os, struct, sys, wave\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "rate = int(sys.argv[sys.argv.index('--rate') + 1])\n"
        f"marker = {str(tmp_path / 'skipped')!r}\n"
        "if rate != 170 and not os.path.exists(marker):\n"
        "    open(marker, 'w').close()\n"
        "    sys.exit(0)\n"
        "n = int(4.0 * 170 / rate * 16000)\n"
        "data = [int(9000 * math.sin(2 * math.pi * 440 * i / 16000)) for i in range(n)]\n"
        "with wave.open(out, 'wb') as w:\n"
        "    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)\n"
        "    w.writeframes(struct.pack(f'<{n}h', *data))\n"
    )
    python = script(tmp_path / "py", f'exec "{sys.executable}" "{engine}" "$@"')
    renderer = PromptRenderer(tmp_path / "c", python=str(python))
    clip = renderer.render("很长的提示")
    assert (tmp_path / "skipped").exists()
    assert check_wav(clip) <= MAX_PROMPT_S
    assert renderer.attempts == 4  # 170 + nothing at the faster rate, then 170 + faster


# --------------------------------------------------------------------------- players


@pytest.fixture
def clip(shared_renderer: PromptRenderer) -> Path:
    return shared_renderer.render(PASS_TEXT)


def test_aplay_new_prompt_terminates_the_previous(tmp_path: Path, clip: Path) -> None:
    command, log = fake_aplay(tmp_path)
    second = tmp_path / "second.wav"
    shutil.copyfile(clip, second)
    with AplayPlayer(device="plughw:0,0", command=str(command)) as player:
        t0 = time.monotonic()
        player.play(clip)
        assert time.monotonic() - t0 < 0.2  # started, not finished (it 'plays' 30 s)
        wait_for(lambda: len(log_lines(log)) == 1)
        first_pid = int(log_lines(log)[0][0])
        assert log_lines(log)[0][1:] == ["-q", "-D", "plughw:0,0", str(clip)]
        assert player.pid == first_pid and alive(first_pid)
        player.play(second)
        assert not alive(first_pid)
        wait_for(lambda: len(log_lines(log)) == 2)
        second_pid = int(log_lines(log)[1][0])
        assert log_lines(log)[1][1:] == ["-q", "-D", "plughw:0,0", str(second)]
        player.stop()
        assert not alive(second_pid) and player.pid is None
    with pytest.raises(PlayerError, match="closed"):
        player.play(clip)


def test_aplay_missing_command(tmp_path: Path, clip: Path) -> None:
    player = AplayPlayer(command=str(tmp_path / "no-aplay"))
    with pytest.raises(PlayerError, match="not found") as caught:
        player.play(clip)
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    with pytest.raises(PlayerError, match="does not exist"):
        player.play(tmp_path / "missing.wav")
    player.close()


@pytest.mark.skipif(shutil.which("aplay") is None, reason="needs ALSA's aplay")
def test_real_aplay_on_alsa_null_device(clip: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ALSA's null PCM discards samples without pacing, so aplay exits almost at once."""
    with AplayPlayer(device="null") as player:
        player.play(clip)
        wait_for(lambda: player.pid is None)
        player.play(clip)  # reaps the first: it exited cleanly
        wait_for(lambda: player.pid is None)
    assert "exited with status" not in caplog.text
    with AplayPlayer(device="no_such_pcm") as gone:  # an unplugged USB sound card
        gone.play(clip)
        wait_for(lambda: gone.pid is None)
    assert "aplay exited with status 1" in caplog.text


def test_mock_player_records_and_fails_on_demand(tmp_path: Path, clip: Path) -> None:
    player = MockPlayer()
    player.play(clip, "hello")
    assert player.played[0][:2] == (clip, "hello") and player.texts == ["hello"]
    player.missing = True
    with pytest.raises(PlayerError, match="missing"):
        player.play(clip)
    player.close()
    with pytest.raises(PlayerError, match="closed"):
        player.play(clip)


def test_file_sink_names_clips_after_their_outcome_in_play_order(
    tmp_path: Path, clip: Path
) -> None:
    """``000001-pass.wav`` says what the kiosk said; the clip's own name is a hash."""
    sink = tmp_path / "sink"
    player = FileSinkPlayer(sink)
    player.play_for(clip, PASS_TEXT, "pass")
    player.play_for(clip, "非绿码请核查", "check")
    player.play(clip, "doctor")  # no tap's prompt (the doctor's speak test)
    player.play_for(clip, None, "../odd outcome")  # never a path outside the sink
    names = [p.name for p in player.recorded()]
    assert names == [
        "000001-pass.wav",
        "000002-check.wav",
        "000003-prompt.wav",
        "000004-___odd_outcome.wav",
    ]
    assert (sink / names[0]).read_bytes() == clip.read_bytes()
    player.close()
    again = FileSinkPlayer(sink)  # numbering continues after a restart
    again.play_for(clip, PASS_TEXT, "pass")
    assert again.recorded()[-1].name == "000005-pass.wav"
    again.close()


async def test_voice_tells_a_file_sink_the_outcome(
    tmp_path: Path, shared_renderer: PromptRenderer
) -> None:
    """Through Voice.say, as the agent speaks a decision (and a fallback clip too)."""
    sink = FileSinkPlayer(tmp_path / "played")
    v = Voice(shared_renderer, sink, PROMPTS, play_timeout_s=2.0)
    await v.start()
    try:
        await v.say(PASS_TEXT, outcome="pass")
        await v.say("一个还没有渲染的提示", outcome="check")  # plays the check clip for now
    finally:
        await v.close()
    assert [p.name for p in sink.recorded()] == ["000001-pass.wav", "000002-check.wav"]


def test_null_player_drops_everything(tmp_path: Path) -> None:
    player = NullPlayer()
    player.play(tmp_path / "whatever.wav")
    player.stop()
    player.close()


@pytest.mark.parametrize(
    ("spec", "kind", "check"),
    [
        ("aplay", AplayPlayer, lambda p: p.device is None),
        ("aplay:plughw:0,0", AplayPlayer, lambda p: p.device == "plughw:0,0"),
        ("null", NullPlayer, lambda p: True),
        ("mock", MockPlayer, lambda p: not p.hang and not p.missing),
        ("mock:hang", MockPlayer, lambda p: p.hang),
        ("mock:missing", MockPlayer, lambda p: p.missing),
    ],
)
def test_make_player(spec: str, kind: type[Player], check: Callable[[Player], bool]) -> None:
    player = make_player(spec)
    assert type(player) is kind and check(player)
    player.close()


def test_make_player_file_and_unknown(tmp_path: Path) -> None:
    player = make_player(f"file:{tmp_path / 'out'}")
    assert isinstance(player, FileSinkPlayer) and player.directory == tmp_path / "out"
    player.close()
    for bad in ("pulse", "null:x", "file:", "mock:loud"):
        with pytest.raises(ValueError, match="unknown audio player"):
            make_player(bad)


# --------------------------------------------------------------------------- Voice


@pytest.fixture
async def voice(shared_renderer: PromptRenderer) -> AsyncIterator[Voice]:
    v = Voice(shared_renderer, MockPlayer(), PROMPTS, play_timeout_s=0.3)
    await v.start()
    yield v
    await v.close()


async def test_say_plays_the_prerendered_clip_at_once(voice: Voice) -> None:
    player = voice.player
    assert isinstance(player, MockPlayer)
    assert set(voice.clips) == set(PROMPTS.values())
    t0 = time.monotonic()
    started = await voice.say(PASS_TEXT)
    assert time.monotonic() - t0 < 0.1
    ((path, text, at),) = player.played
    assert path == voice.renderer.path_for(PASS_TEXT) and text == PASS_TEXT
    assert t0 <= at <= started <= time.monotonic()
    assert voice.last_started == started


async def test_start_renders_off_the_event_loop(tmp_path: Path) -> None:
    v = Voice(PromptRenderer(tmp_path), MockPlayer(), list(PROMPTS.values()))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await v.start()
    task.cancel()
    assert ticks >= 5  # three syntheses took a while and the loop kept running
    assert all(v.ready(t) for t in PROMPTS.values())
    await v.close()


async def test_unrendered_text_falls_back_and_renders_in_background(voice: Voice) -> None:
    player = voice.player
    assert isinstance(player, MockPlayer)
    new_text = "请出示健康码"
    t0 = time.monotonic()
    await voice.say(new_text, outcome="check")
    assert time.monotonic() - t0 < 0.1  # never waits for synthesis
    assert player.played[-1][0] == voice.renderer.path_for(PROMPTS["check"])
    for _ in range(2000):
        if voice.ready(new_text):
            break
        await asyncio.sleep(0.01)
    assert voice.ready(new_text)
    await voice.say(new_text)
    assert player.played[-1][:2] == (voice.renderer.path_for(new_text), new_text)


async def test_unknown_outcome_falls_back_to_fault_clip(voice: Voice) -> None:
    player = voice.player
    assert isinstance(player, MockPlayer)
    await voice.say("另一个提示", outcome="no-such-outcome")
    assert player.played[-1][0] == voice.renderer.path_for(PROMPTS["fault"])


async def test_no_clip_and_no_fallback_is_a_voice_error(
    shared_renderer: PromptRenderer, caplog: pytest.LogCaptureFixture
) -> None:
    v = Voice(shared_renderer, MockPlayer(), [PASS_TEXT])
    await v.start()
    with pytest.raises(VoiceError, match="not rendered"):
        await v.say("完全未知的提示")
    assert "not spoken" in caplog.text
    await v.close()


async def test_new_prompt_interrupts_the_old_one(tmp_path: Path, voice: Voice) -> None:
    command, log = fake_aplay(tmp_path)
    v = Voice(voice.renderer, AplayPlayer(command=str(command)), PROMPTS)
    await v.start()
    await v.say(PASS_TEXT)
    await asyncio.to_thread(wait_for, lambda: len(log_lines(log)) == 1)
    first = int(log_lines(log)[0][0])
    await v.say(PROMPTS["check"])
    assert not alive(first)
    await asyncio.to_thread(wait_for, lambda: len(log_lines(log)) == 2)
    second = int(log_lines(log)[1][0])
    assert log_lines(log)[1][-1] == str(voice.renderer.path_for(PROMPTS["check"]))
    await v.close()
    assert not alive(second)


async def test_hanging_player_cannot_stall_the_tap(
    shared_renderer: PromptRenderer, caplog: pytest.LogCaptureFixture
) -> None:
    player = MockPlayer(hang=True)
    v = Voice(shared_renderer, player, PROMPTS, play_timeout_s=0.2)
    await v.start()
    t0 = time.monotonic()
    with pytest.raises(PlayerError, match=r"did not return within 0\.2 s"):
        await v.say(PASS_TEXT)
    assert time.monotonic() - t0 < 0.4
    t0 = time.monotonic()
    with pytest.raises(PlayerError, match="still stuck"):
        await v.say(PASS_TEXT)  # no pile-up of threads on a wedged device
    assert time.monotonic() - t0 < 0.05
    assert "did not return" in caplog.text
    player.hang = False
    await v.stop()  # releases the stuck call
    for _ in range(200):
        try:
            await v.say(PASS_TEXT)
            break
        except PlayerError:
            await asyncio.sleep(0.01)
    assert player.texts == [PASS_TEXT]
    await v.close()


async def test_missing_player_raises_player_error(
    shared_renderer: PromptRenderer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="device.acting.voice")
    for player in (MockPlayer(missing=True), AplayPlayer(command=str(tmp_path / "no-aplay"))):
        v = Voice(shared_renderer, player, PROMPTS)
        await v.start()
        with pytest.raises(PlayerError):
            await v.say(PASS_TEXT)
        await v.close()
    assert caplog.text.count("audio player play failed") == 2


async def test_start_reports_unrenderable_prompts(tmp_path: Path) -> None:
    v = Voice(PromptRenderer(tmp_path, voice="xx/none"), MockPlayer(), PROMPTS)
    with pytest.raises(VoiceError, match="prompts not rendered"):
        await v.start()
    with pytest.raises(VoiceError):
        await v.say(PASS_TEXT, outcome="pass")
    await v.close()
