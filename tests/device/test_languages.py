"""The card holder's language: real espeak renders joined Chinese first, within 3 s."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from core.outcomes import ALL_OUTCOMES, DEFAULT_PROMPTS
from device.acting.audio import Clip, concat, load_clip, save_wav
from device.acting.languages import (
    BUDGET_S,
    DEFAULT_CARD_LANGUAGES,
    DEFAULT_LANGUAGE_RATE,
    DEFAULT_LANGUAGE_VOICES,
    GAP_S,
    SECOND_LANGUAGE_PROMPTS,
    Bilingual,
    SecondLanguage,
    config_problems,
    languages_in_use,
)
from device.acting.voice import MockPlayer, PromptRenderer, Voice, check_wav
from device.errors import VoiceError

#: One 16-bit step: what a WAV round trip may change in a sample.
LSB = 1.0 / 32768.0

Pair = tuple[Path, Path]


def english_renderer(cache: Path) -> PromptRenderer:
    return PromptRenderer(cache, voice=DEFAULT_LANGUAGE_VOICES["en"], rate=DEFAULT_LANGUAGE_RATE)


@pytest.fixture(scope="module")
def pairs(prompt_cache: Path) -> Mapping[str, Pair]:
    """outcome → (Chinese clip, English clip), rendered once with espeak-ng for the module."""
    chinese, english = PromptRenderer(prompt_cache), english_renderer(prompt_cache)
    return {
        outcome: (chinese.render(text), english.render(SECOND_LANGUAGE_PROMPTS["en"][outcome]))
        for outcome, text in DEFAULT_PROMPTS.items()
    }


def assert_joined(combined: Clip, first: Clip, second: Clip, gap_s: float) -> None:
    """``combined`` is ``first``, then ``gap_s`` of silence, then ``second``, sample by sample."""
    assert combined.rate == first.rate == second.rate
    gap = round(gap_s * first.rate)
    assert len(combined.samples) == len(first.samples) + gap + len(second.samples)
    head, rest = np.split(combined.samples, [len(first.samples)])
    silence, tail = np.split(rest, [gap])
    np.testing.assert_allclose(head, first.samples, atol=LSB)
    assert not np.any(silence)
    np.testing.assert_allclose(tail, second.samples, atol=LSB)


# --------------------------------------------------------------------------- words and config


def test_every_outcome_has_short_english_words() -> None:
    english = SECOND_LANGUAGE_PROMPTS["en"]
    assert set(english) == ALL_OUTCOMES
    assert english["pass"] == "Green code, please pass"
    assert all(0 < len(words.split()) <= 5 for words in english.values())


def test_default_card_languages() -> None:
    assert dict(DEFAULT_CARD_LANGUAGES) == {"I": "en", "Y": "en", "J": ""}
    assert languages_in_use(DEFAULT_CARD_LANGUAGES) == {"en"}
    assert languages_in_use({"J": "", "resident": ""}) == frozenset()
    assert config_problems(DEFAULT_CARD_LANGUAGES, DEFAULT_LANGUAGE_VOICES) == []


def test_config_problems_name_the_language() -> None:
    assert config_problems({"I": "en"}, {}) == ["no espeak voice for 'en'"]
    assert config_problems({"I": "fr"}, {"fr": "roa/fr"}) == ["no 'fr' prompts (known: ['en'])"]
    assert config_problems({"J": ""}, {}) == []  # Chinese only needs nothing


def test_second_language_refuses_a_language_it_cannot_speak(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['en'\]"):
        SecondLanguage({}, {"I": "en"}, tmp_path)
    with pytest.raises(ValueError, match=r"\['fr'\]"):
        SecondLanguage({"fr": english_renderer(tmp_path)}, {"I": "fr"}, tmp_path)


# --------------------------------------------------------------------------- compose


def test_second_clip_follows_the_first(pairs: Mapping[str, Pair], tmp_path: Path) -> None:
    first, second = pairs["pass"]
    joined = Bilingual(budget_s=10.0).compose(first, second, tmp_path)
    assert joined is not None and joined.parent == tmp_path
    assert_joined(load_clip(joined), load_clip(first), load_clip(second), GAP_S)
    assert check_wav(joined) == pytest.approx(
        check_wav(first) + GAP_S + check_wav(second), abs=1 / 22050
    )


def test_every_default_outcome_fits_the_budget_or_is_refused(
    pairs: Mapping[str, Pair], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The pair never plays longer than 3 s: joined when it fits, Chinese alone otherwise."""
    bilingual = Bilingual()
    assert (bilingual.budget_s, bilingual.gap_s) == (BUDGET_S, GAP_S) == (3.0, 0.12)
    for outcome, (first, second) in pairs.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, "device.acting.languages"):
            joined = bilingual.compose(first, second, tmp_path)
        length = check_wav(first) + GAP_S + check_wav(second)
        if joined is None:
            assert length > BUDGET_S, outcome
            assert first.name in caplog.text and second.name in caplog.text
        else:
            assert check_wav(joined) <= BUDGET_S, outcome
            assert length <= BUDGET_S + 1 / 22050, outcome
            assert not caplog.records


def test_green_code_please_pass_fits_at_the_defaults(
    pairs: Mapping[str, Pair], tmp_path: Path
) -> None:
    """What the default configuration gives a foreign visitor: 绿码通行, then English, ≤ 3 s.

    The longer Chinese prompts already fill the budget alone at the default rate, so the
    default English rate is chosen for this one; espeak's length varies by a few per cent
    between renders, which the pair absorbs by speaking the English a little faster.
    """
    zh, _ = pairs["pass"]
    languages = SecondLanguage({"en": english_renderer(tmp_path)}, {"I": "en"}, tmp_path)
    languages.prepare({"pass": DEFAULT_PROMPTS["pass"]}, {DEFAULT_PROMPTS["pass"]: zh})
    joined = languages.clip_for(DEFAULT_PROMPTS["pass"], "I")
    assert joined is not None and check_wav(joined) <= BUDGET_S


def test_a_second_language_a_little_too_long_is_spoken_faster_to_fit(
    pairs: Mapping[str, Pair], tmp_path: Path
) -> None:
    """English that overflows the pair by 0.15 s is re-spoken within its room, not dropped."""
    _, en = pairs["pass"]
    room = check_wav(en) - 0.15
    first = tmp_path / "first.wav"
    save_wav(Clip(np.full(round((BUDGET_S - GAP_S - room) * 22050), 0.1, np.float32), 22050), first)
    languages = SecondLanguage({"en": english_renderer(tmp_path)}, {"I": "en"}, tmp_path)
    languages.prepare({"pass": "绿码通行"}, {"绿码通行": first})
    joined = languages.clip_for("绿码通行", "I")
    assert joined is not None and check_wav(joined) <= BUDGET_S
    assert check_wav(joined) > BUDGET_S - 0.3  # the English kept, only brisker
    base = english_renderer(tmp_path).path_for(SECOND_LANGUAGE_PROMPTS["en"]["pass"])
    assert len(languages.sources) == 1 and base not in languages.sources  # the fitted one


def test_over_budget_is_refused_with_a_warning(
    pairs: Mapping[str, Pair], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = pairs["pass"]
    length = check_wav(first) + 0.5 + check_wav(second)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, "device.acting.languages"):
        refused = Bilingual(budget_s=length - 0.01, gap_s=0.5).compose(
            first, second, out, label="pass.en"
        )
        fits = Bilingual(budget_s=length + 0.01, gap_s=0.5).compose(first, second, out)
    assert refused is None and fits is not None
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert message.startswith(f"second-language prompt pass.en not added: {first.name} + ")
    assert f"play {length:.2f} s, over the {length - 0.01:g} s budget" in message
    assert list(out.iterdir()) == [fits]  # a refusal leaves no file behind


def test_compose_reuses_its_file_and_rewrites_a_broken_one(
    pairs: Mapping[str, Pair], tmp_path: Path
) -> None:
    first, second = pairs["pass"]
    bilingual = Bilingual(budget_s=10.0)
    joined = bilingual.compose(first, second, tmp_path)
    assert joined is not None
    assert bilingual.compose(first, second, tmp_path) == joined
    assert Bilingual(budget_s=0.5).compose(first, second, tmp_path) is None  # cached, too long
    assert Bilingual(budget_s=10.0, gap_s=0.2).compose(first, second, tmp_path) != joined
    other = bilingual.compose(*pairs["check"], tmp_path)
    assert other is not None and other != joined
    joined.write_bytes(b"RIFF")  # truncated by a crash: not played, written again
    assert bilingual.compose(first, second, tmp_path) == joined
    assert_joined(load_clip(joined), load_clip(first), load_clip(second), GAP_S)


def test_a_second_clip_at_another_rate_is_resampled(tmp_path: Path) -> None:
    first = Clip(np.full(2205, 0.25, dtype=np.float32), 22050)  # 0.1 s
    second = Clip(np.full(1600, -0.5, dtype=np.float32), 16000)  # 0.1 s
    save_wav(first, tmp_path / "zh.wav")
    save_wav(second, tmp_path / "en.wav")
    joined = Bilingual().compose(tmp_path / "zh.wav", tmp_path / "en.wav", tmp_path)
    assert joined is not None
    combined = load_clip(joined)
    expected = concat(load_clip(tmp_path / "zh.wav"), load_clip(tmp_path / "en.wav"))
    assert combined.rate == 22050
    np.testing.assert_allclose(combined.samples, expected.samples, atol=LSB)


def test_compose_names_an_unreadable_clip(pairs: Mapping[str, Pair], tmp_path: Path) -> None:
    bad = tmp_path / "pass.en.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(VoiceError, match=r"pass\.en\.wav"):
        Bilingual().compose(pairs["pass"][0], bad, tmp_path)


# --------------------------------------------------------------------------- per card type


def test_card_type_picks_the_joined_clip(
    pairs: Mapping[str, Pair], prompt_cache: Path, tmp_path: Path
) -> None:
    """What the agent plays for a tap: I and Y hear English, J and residents Chinese only."""
    first = {DEFAULT_PROMPTS[outcome]: zh for outcome, (zh, _) in pairs.items()}
    languages = SecondLanguage(
        {"en": english_renderer(prompt_cache)},
        DEFAULT_CARD_LANGUAGES,
        tmp_path,
        bilingual=Bilingual(budget_s=10.0),  # the mechanism, whatever espeak's pace
    )
    assert languages.prepare(DEFAULT_PROMPTS, first) == len(DEFAULT_PROMPTS)
    for outcome, text in DEFAULT_PROMPTS.items():
        zh, en = pairs[outcome]
        joined = languages.clip_for(text, "I")
        assert joined is not None and languages.clip_for(text, "Y") == joined
        assert_joined(load_clip(joined), load_clip(zh), load_clip(en), GAP_S)
        assert languages.clip_for(text, "J") is None
        assert languages.clip_for(text, "resident") is None
    assert languages.clip_for("另一句话", "I") is None  # not configured: Chinese only
    assert languages.language_for("J") == "" and languages.language_for("X") == ""


def test_a_site_turns_english_on_for_permits(
    pairs: Mapping[str, Pair], prompt_cache: Path, tmp_path: Path
) -> None:
    zh, _ = pairs["pass"]
    languages = SecondLanguage(
        {"en": english_renderer(prompt_cache)},
        {"J": "en"},
        tmp_path,
        bilingual=Bilingual(budget_s=10.0),
    )
    languages.prepare({"pass": DEFAULT_PROMPTS["pass"]}, {DEFAULT_PROMPTS["pass"]: zh})
    assert languages.clip_for(DEFAULT_PROMPTS["pass"], "J") is not None
    assert languages.clip_for(DEFAULT_PROMPTS["pass"], "I") is None


def test_over_budget_and_unrenderable_prompts_stay_chinese(
    pairs: Mapping[str, Pair], prompt_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    zh, en = pairs["pass"]
    pass_text = DEFAULT_PROMPTS["pass"]
    budget = check_wav(zh) + GAP_S + check_wav(en) + 0.01  # pass fits, longer pairs do not
    broken = PromptRenderer(prompt_cache, voice="no-such-voice", timeout_s=10.0)
    with caplog.at_level(logging.WARNING, "device.acting.languages"):
        fits = SecondLanguage(
            {"en": english_renderer(prompt_cache)},
            {"I": "en"},
            tmp_path / "fits",
            bilingual=Bilingual(budget_s=budget),
        )
        prepared = fits.prepare(
            DEFAULT_PROMPTS, {DEFAULT_PROMPTS[o]: p[0] for o, p in pairs.items()}
        )
        mute = SecondLanguage({"en": broken}, {"I": "en"}, tmp_path / "mute")
        assert mute.prepare({"pass": pass_text}, {pass_text: zh}) == 0  # never raises
    assert fits.clip_for(pass_text, "I") is not None
    longer = [o for o, (a, b) in pairs.items() if check_wav(a) + GAP_S + check_wav(b) > budget]
    assert prepared == len(DEFAULT_PROMPTS) - len(longer)
    assert all(fits.clip_for(DEFAULT_PROMPTS[o], "I") is None for o in longer)
    assert mute.clip_for(pass_text, "I") is None
    assert "no en prompt for pass" in caplog.text and "no-such-voice" in caplog.text


def test_a_recorded_second_language_clip_is_preferred(
    pairs: Mapping[str, Pair], tmp_path: Path
) -> None:
    zh, _ = pairs["pass"]
    recorded = tmp_path / "pass-en.wav"
    save_wav(Clip(np.full(4410, 0.1, dtype=np.float32), 22050), recorded)
    broken = PromptRenderer(tmp_path / "cache", voice="no-such-voice")  # never asked
    languages = SecondLanguage(
        {"en": broken}, {"I": "en"}, tmp_path / "out", recorded={"pass.en": recorded}
    )
    languages.prepare({"pass": DEFAULT_PROMPTS["pass"]}, {DEFAULT_PROMPTS["pass"]: zh})
    joined = languages.clip_for(DEFAULT_PROMPTS["pass"], "I")
    assert joined is not None and broken.attempts == 0
    assert_joined(load_clip(joined), load_clip(zh), load_clip(recorded), GAP_S)


async def test_a_sites_own_words_are_joined_with_the_second_language_too(
    prompt_cache: Path, tmp_path: Path
) -> None:
    """A site's own prompt text (it comes with the server's answer) is rendered at its first
    tap and then joined with English like the configured prompts, so a foreign card holder
    at that site hears the English from the next tap on."""
    languages = SecondLanguage(
        {"en": english_renderer(prompt_cache)},
        {"I": "en"},
        tmp_path / "pairs",
        bilingual=Bilingual(budget_s=10.0),  # the mechanism, whatever espeak's pace
    )
    voice = Voice(
        PromptRenderer(prompt_cache), MockPlayer(), dict(DEFAULT_PROMPTS), second_language=languages
    )
    await voice.start()
    site_words = "绿码，请通行"
    await voice.say(site_words, outcome="pass", card_type="I")  # not rendered yet: stands in
    for _ in range(400):
        joined = voice.clip_for(site_words, "pass", "I")
        if joined is not None and joined.parent == tmp_path / "pairs":
            break
        await asyncio.sleep(0.05)
    assert joined is not None and joined.parent == tmp_path / "pairs"
    assert voice.clip_for(site_words, "pass", "resident") == voice.clips[site_words]
    await voice.close()
