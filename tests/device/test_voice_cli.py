"""`kiosk voice test`: every prompt played through the configured player, in turn, by ear."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from core.outcomes import DEFAULT_PROMPTS
from device.acting.voice import FileSinkPlayer, MockPlayer, check_wav
from device.config import DeviceConfig
from device.voice_cli import voice_test
from siheyi.cli import main


def config(tmp_path: Path, **voice: object) -> DeviceConfig:
    return DeviceConfig.from_dict(
        {
            "state_dir": str(tmp_path / "state"),
            "voice": {"cache_dir": str(tmp_path / "prompts"), **voice},
        }
    )


class Waits:
    """Records the waits between prompts instead of sleeping through them."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def test_every_prompt_plays_in_turn_each_to_its_end(tmp_path: Path) -> None:
    sink = FileSinkPlayer(tmp_path / "heard")
    out, waits = io.StringIO(), Waits()
    cfg = config(tmp_path)
    status = asyncio.run(voice_test(cfg, player=sink, pause_s=0.5, out=out, sleep=waits))
    assert status == 0, out.getvalue()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("[")]
    heard = sink.recorded()
    # the five outcomes and the speak-test prompt, then the joined pairs that fit 3 s
    assert len(lines) == len(heard) == len(waits.seconds) >= len(DEFAULT_PROMPTS) + 1
    keys = [line.split()[1] for line in lines]
    assert keys[: len(DEFAULT_PROMPTS)] == list(DEFAULT_PROMPTS)
    assert keys[len(DEFAULT_PROMPTS)] == "speak_test"
    assert "pass.en" in keys  # I and Y cards hear English after 绿码通行 (it fits 3 s)
    for line, wav, wait in zip(lines, heard, waits.seconds, strict=True):
        seconds = check_wav(wav)
        assert f"{seconds:4.2f} s" in line
        assert wait == pytest.approx(seconds + 0.5)  # to the end, then the pause
    joined = [w for line, w in zip(lines, heard, strict=True) if "(I card)" in line]
    assert joined and all(check_wav(w) <= 3.0 for w in joined)
    assert out.getvalue().rstrip().endswith("voice test: every prompt played")


def test_a_recorded_clip_is_named_as_such(tmp_path: Path) -> None:
    rate = 16000
    t = np.arange(int(rate * 1.2)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(
        np.float32
    )
    clip = tmp_path / "pass.flac"
    soundfile.write(clip, tone, rate)
    out = io.StringIO()
    cfg = config(tmp_path, clips={"pass": str(clip)}, languages={"I": "", "Y": ""})
    assert asyncio.run(voice_test(cfg, player=MockPlayer(), out=out, sleep=Waits())) == 0
    (line,) = [x for x in out.getvalue().splitlines() if x.startswith("[1/")]
    assert "pass" in line and "recorded" in line


def test_a_player_that_fails_is_reported_and_the_status_is_1(tmp_path: Path) -> None:
    out = io.StringIO()
    cfg = config(tmp_path, languages={"I": "", "Y": ""})
    status = asyncio.run(voice_test(cfg, player=MockPlayer(missing=True), out=out, sleep=Waits()))
    assert status == 1
    assert "FAILED" in out.getvalue() and "prompt(s) not played" in out.getvalue()


def test_the_command_line_reads_the_config_and_exits_2_when_it_cannot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["voice", "test", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "error:" in capsys.readouterr().err


def test_it_will_not_spoil_the_agents_cache_as_another_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run as root on a kiosk whose state belongs to the agent's user, the test would leave
    root-owned files in the prompt cache the agent must write to: it refuses, naming the
    user to run it as."""
    from device.voice_cli import foreign_owner

    state = tmp_path / "state"
    state.mkdir()
    mine = state.stat().st_uid
    assert foreign_owner(state, mine) is None
    assert foreign_owner(tmp_path / "none-yet", mine + 1) is None
    assert foreign_owner(state, mine + 1) is not None
    if mine != 0:
        return  # changing the owner needs root; the rule itself is checked above
    os.chown(state, 65534, 65534)  # nobody
    config = tmp_path / "kiosk.toml"
    config.write_text(f'state_dir = "{state}"\n[voice]\nplayer = "null"\n', encoding="utf-8")
    assert main(["voice", "test", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "belongs to nobody" in err and "sudo -u nobody kiosk voice test" in err
    assert list(state.iterdir()) == []  # nothing rendered or written
