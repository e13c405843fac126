"""Voice.retune and background renders when words do not render at once: what a tap hears
meanwhile, which words are rendered, and the volume copy ready before the first play."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from core.outcomes import DEFAULT_PROMPTS
from device.acting.voice import MockPlayer, PromptRenderer, Voice, VoiceParts
from device.acting.volume import VolumeSchedule, volume_copy
from device.errors import VoiceError

PROMPTS = {k: DEFAULT_PROMPTS[k] for k in ("pass", "check", "fault")}
CHECK = PROMPTS["check"]
NEW_CHECK = "请出示绿码"
GAIN = -10.0
ALL_DAY_QUIETER = VolumeSchedule([("00:00", "00:00", GAIN)])


class FlakyRenderer(PromptRenderer):
    """A renderer whose synthesis of the texts in ``fail`` fails, as a hung espeak does."""

    def __init__(self, *args: Any, fail: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail = set(fail)

    def render(self, text: str) -> Path:
        if text in self.fail:
            raise VoiceError(f"speech synthesis hung for 20 s and was killed ({text!r})")
        return super().render(text)


@pytest.fixture
def cache(prompt_cache: Path, tmp_path: Path) -> Path:
    """A copy of the session's real renders (a retune prunes its cache: not the shared one)."""
    PromptRenderer(prompt_cache).prerender([*PROMPTS.values(), NEW_CHECK])
    return Path(shutil.copytree(prompt_cache, tmp_path / "prompts"))


@pytest.fixture
async def voice(cache: Path, tmp_path: Path) -> AsyncIterator[Voice]:
    v = Voice(FlakyRenderer(cache), MockPlayer(), PROMPTS, volume_dir=tmp_path / "volume")
    await v.start()
    yield v
    await v.close()


def played(voice: Voice) -> Path:
    player = voice.player
    assert isinstance(player, MockPlayer)
    return player.played[-1][0]


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    for _ in range(round(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def test_an_outcome_whose_new_words_do_not_render_keeps_its_old_clip(
    voice: Voice, caplog: pytest.LogCaptureFixture
) -> None:
    """Not the fault prompt to a citizen the gate lets through (or sends to the staff)."""
    renderer = voice.renderer
    assert isinstance(renderer, FlakyRenderer)
    old = voice.clip_for(CHECK, "check")
    assert old is not None
    renderer.fail = {NEW_CHECK}
    parts = VoiceParts({**PROMPTS, "check": NEW_CHECK}, schedule=ALL_DAY_QUIETER)
    with caplog.at_level(logging.ERROR, "device.acting.voice"):
        assert await voice.retune(parts)  # the new schedule and the other words apply
    assert f"{NEW_CHECK!r} not rendered; the previous words stand in for check" in caplog.text
    assert volume_copy(old, GAIN, voice.volume_dir or Path()).is_file()  # no decoding at a tap
    await voice.say(NEW_CHECK, outcome="check")
    assert played(voice) == volume_copy(old, GAIN, voice.volume_dir or Path())
    assert voice.schedule.gains() == {GAIN}

    assert await voice.retune(parts)  # still failing: the stand-in is kept, and not pruned
    assert old.is_file()
    await until(lambda: not voice._renders)  # the tap's background render failed too
    renderer.fail.clear()
    await voice.say(NEW_CHECK, outcome="check")
    assert played(voice) == volume_copy(old, GAIN, voice.volume_dir or Path())
    assert voice.unrendered == 1 and NEW_CHECK in (voice.health()["last_error"] or "")
    await until(lambda: voice.ready(NEW_CHECK))
    assert voice.unrendered == 0 and voice.health()["last_error"] is None  # whole again
    await voice.say(NEW_CHECK, outcome="check")
    new = volume_copy(renderer.path_for(NEW_CHECK), GAIN, voice.volume_dir or Path())
    assert played(voice) == new


async def test_a_packs_words_render_in_the_background_whatever_text_the_tap_brings(
    cache: Path,
) -> None:
    renderer = FlakyRenderer(cache, fail={NEW_CHECK})
    prompts = {**PROMPTS, "check": NEW_CHECK}
    voice = Voice(renderer, MockPlayer(), prompts, remote_words={"check"})
    with pytest.raises(VoiceError, match="prompts not rendered"):
        await voice.start()
    renderer.fail.clear()
    await voice.say(CHECK, outcome="check")  # the server's text; the pack's words are wanted
    await until(lambda: voice.ready(NEW_CHECK))
    assert not voice.ready(CHECK)  # the tap's text was not rendered for nothing
    await voice.say(CHECK, outcome="check")
    assert played(voice) == renderer.path_for(NEW_CHECK)
    await voice.close()


async def test_a_background_render_has_its_volume_copy_before_it_is_played(
    cache: Path, tmp_path: Path
) -> None:
    """Made at the first play instead, the copy loads the audio stack (over a second, on a
    kiosk) inside the 0.3 s the player has to start."""
    volume = tmp_path / "volume"
    voice = Voice(
        PromptRenderer(cache), MockPlayer(), PROMPTS, schedule=ALL_DAY_QUIETER, volume_dir=volume
    )
    await voice.start()
    await voice.say(NEW_CHECK, outcome="check")
    assert played(voice) == volume_copy(voice.renderer.path_for(CHECK), GAIN, volume)
    await until(lambda: voice.ready(NEW_CHECK))
    copy = volume_copy(voice.renderer.path_for(NEW_CHECK), GAIN, volume)
    assert copy.is_file()
    await voice.say(NEW_CHECK, outcome="check")
    assert played(voice) == copy
    await voice.close()
