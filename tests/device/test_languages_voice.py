"""The Voice facade plays the prompt joined with the card holder's language (issue 16)."""

from __future__ import annotations

from pathlib import Path

from core.outcomes import DEFAULT_PROMPTS
from device.acting.audio import load_clip
from device.acting.languages import (
    DEFAULT_CARD_LANGUAGES,
    DEFAULT_LANGUAGE_RATE,
    DEFAULT_LANGUAGE_VOICES,
    SECOND_LANGUAGE_PROMPTS,
    Bilingual,
    SecondLanguage,
)
from device.acting.voice import MockPlayer, PromptRenderer, Voice

PASS = DEFAULT_PROMPTS["pass"]


async def test_a_foreign_card_hears_chinese_then_english(
    prompt_cache: Path, tmp_path: Path
) -> None:
    english = PromptRenderer(
        prompt_cache, voice=DEFAULT_LANGUAGE_VOICES["en"], rate=DEFAULT_LANGUAGE_RATE
    )
    second = SecondLanguage(
        {"en": english},
        DEFAULT_CARD_LANGUAGES,
        tmp_path,
        bilingual=Bilingual(budget_s=10.0),  # every outcome, whatever espeak's pace
    )
    player = MockPlayer()
    voice = Voice(
        PromptRenderer(prompt_cache), player, dict(DEFAULT_PROMPTS), second_language=second
    )
    await voice.start()
    for card_type in ("resident", "J", "I", "Y"):
        await voice.say(PASS, outcome="pass", card_type=card_type)
    await voice.say(PASS, outcome="pass")
    chinese = voice.clips[PASS]
    played = [path for path, _, _ in player.played]
    joined = played[2]
    assert played == [chinese, chinese, joined, joined, chinese]
    assert player.texts == [PASS] * 5
    words = english.render(SECOND_LANGUAGE_PROMPTS["en"]["pass"])
    samples = len(load_clip(chinese).samples) + round(0.12 * 22050) + len(load_clip(words).samples)
    assert len(load_clip(joined).samples) == samples
    await voice.close()
