"""The card holder's language: a short second-language prompt after the Chinese one.

A foreigner's permanent-residence card (card type ``I`` or ``Y``) tells the kiosk that the
person at the gate may not understand 绿码通行; a Hong Kong/Macao/Taiwan permit (``J``)
usually belongs to someone who does, so by default only ``I`` and ``Y`` hear English, and a
site can switch it on for ``J`` too (issue 16, part 3). The second language must not break
the three-second promise: a tap every 3 s must never cut a prompt off, so the pair
(Chinese, a short gap, the second language) has to fit in :data:`BUDGET_S`, and when it
does not the citizen hears the Chinese prompt alone, as before, rather than half of the
English one.

* :data:`SECOND_LANGUAGE_PROMPTS` holds the words per language and outcome, kept short
  because they share the budget with the Chinese prompt;
* :class:`Bilingual` joins two normalised clips (Chinese first) and refuses a pair over the
  budget, with a warning that names both clips and the length;
* :class:`SecondLanguage` is what a kiosk keeps: which card type hears which language, and
  the joined clips, prepared once at start (synthesis blocks; a tap never waits for it) so
  that picking one for a tap is a dictionary look-up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, get_args

from device.acting.clips import clip_key
from device.acting.voice import PromptRenderer, check_wav
from device.errors import VoiceError

__all__ = [
    "BUDGET_S",
    "DEFAULT_CARD_LANGUAGES",
    "DEFAULT_LANGUAGE_RATE",
    "DEFAULT_LANGUAGE_VOICES",
    "GAP_S",
    "SECOND_LANGUAGE_PROMPTS",
    "SECOND_LANGUAGE_SPEED_UP",
    "Bilingual",
    "LanguageName",
    "SecondLanguage",
    "config_problems",
    "languages_in_use",
]

log = logging.getLogger(__name__)

#: A card type's language: ``""`` is Chinese only (no second prompt).
LanguageName = Literal["", "en"]

#: The longest a prompt may play: the next tap can come 3 s after this one.
BUDGET_S: Final = 3.0
#: Silence between the Chinese and the second-language prompt: enough to hear two phrases,
#: short enough not to spend the budget.
GAP_S: Final = 0.12

#: Second-language words per outcome (core.outcomes.Outcome values). Short on purpose: they
#: follow the Chinese prompt inside the same 3 s, and a visitor in a noisy station needs the
#: instruction, not a sentence.
SECOND_LANGUAGE_PROMPTS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "en": MappingProxyType(
            {
                "pass": "Green code, please pass",
                "check": "Not green, see staff",
                "nat_expired": "Test result expired",
                "invalid_credential": "Invalid card, tap again",
                "fault": "Out of order, call staff",
            }
        ),
    }
)

#: Card type (core.wire.CardType) → language. Residence cards for foreigners (I, Y) hear
#: English; HK/Macao/Taiwan permits (J) stay Chinese unless the site turns English on.
DEFAULT_CARD_LANGUAGES: Mapping[str, str] = MappingProxyType({"I": "en", "Y": "en", "J": ""})

#: espeak-ng voice per language, spelled as pyttsx3's espeak driver names it (as "sit/cmn").
DEFAULT_LANGUAGE_VOICES: Mapping[str, str] = MappingProxyType({"en": "gmw/en-us"})

#: Words per minute for the second language: brisker than the Chinese prompt's 170 so that
#: "Green code, please pass" fits after 绿码通行 with room to spare (espeak-ng, levelled and
#: trimmed: 1.59 s + 0.12 s + 1.19 s = 2.90 s at 220; 1.55 s of English at 170 would not fit).
DEFAULT_LANGUAGE_RATE: Final = 220
#: How much faster than ``language_rate`` a second-language prompt may be spoken to make
#: its pair fit the budget: a little brisker is still clear, a gabble is not.
SECOND_LANGUAGE_SPEED_UP: Final = 1.25


def languages_in_use(card_languages: Mapping[str, str]) -> frozenset[str]:
    """The second languages some card type hears (``""``, Chinese only, is not one)."""
    return frozenset(lang for lang in card_languages.values() if lang)


def config_problems(
    card_languages: Mapping[str, str],
    voices: Mapping[str, str],
    texts: Mapping[str, Mapping[str, str]] = SECOND_LANGUAGE_PROMPTS,
) -> list[str]:
    """What is wrong with a language configuration (empty: nothing).

    A language some card type hears needs words and an espeak voice; saying so at start is
    better than a kiosk that silently never speaks it.
    """
    found: list[str] = []
    for lang in sorted(languages_in_use(card_languages)):
        if lang not in texts:
            found.append(f"no {lang!r} prompts (known: {sorted(texts)})")
        if not voices.get(lang, "").strip():
            found.append(f"no espeak voice for {lang!r}")
    return found


class Bilingual:
    """Joins a Chinese clip and its second-language clip, within the prompt budget.

    ``compose`` writes ``out_dir/bilingual-<sha256>.wav`` (named after both clips' bytes
    and the gap, so a changed prompt gets a new file and an unchanged one is reused) and
    returns it, or returns None with a WARNING when the pair with its gap would play longer
    than ``budget_s``: then the caller speaks the Chinese clip alone.
    """

    def __init__(self, *, budget_s: float = BUDGET_S, gap_s: float = GAP_S) -> None:
        if budget_s <= 0 or gap_s < 0:
            raise ValueError(f"budget must be positive and gap not negative: {budget_s}, {gap_s}")
        self.budget_s = float(budget_s)
        self.gap_s = float(gap_s)

    def compose(self, first: Path, second: Path, out_dir: Path, *, label: str = "") -> Path | None:
        """``first``, ``gap_s`` of silence, ``second`` as one WAV; None if over budget.

        ``label`` names the pair in the warning (``pass.en``); the clips' file names are
        given too. VoiceError if either clip cannot be read or the result cannot be written.
        """
        target = Path(out_dir) / f"bilingual-{self._digest(first, second)}.wav"
        if _valid(target) and check_wav(target) <= self.budget_s:
            return target  # joined at an earlier start: no audio stack to load
        # The lengths from the WAV headers first: a pair over budget is refused at every
        # start, and must not make each start import the audio stack to find that out.
        total = check_wav(first) + self.gap_s + check_wav(second)
        if total > self.budget_s + 0.005:
            self._refuse(label, first, second, total)
            return None
        # Imported here, as PromptRenderer does: the audio stack (scipy) costs a second or
        # more to import, which an agent whose prompts are all cached never pays.
        from device.acting.audio import concat, load_clip, save_wav

        combined = concat(load_clip(first), load_clip(second), gap_s=self.gap_s)
        if combined.duration_s > self.budget_s:
            self._refuse(label, first, second, combined.duration_s)
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp.wav")
        try:
            save_wav(combined, tmp)
            os.replace(tmp, target)  # a reader never sees half a clip
        except OSError as exc:
            raise VoiceError(f"cannot write {target.name}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def _refuse(self, label: str, first: Path, second: Path, seconds: float) -> None:
        log.warning(
            "second-language prompt %s not added: %s + %.2f s gap + %s play %.2f s, over "
            "the %g s budget; the Chinese prompt plays alone",
            label or "-",
            first.name,
            self.gap_s,
            second.name,
            seconds,
            self.budget_s,
        )

    def _digest(self, first: Path, second: Path) -> str:
        digest = hashlib.sha256(f"{self.gap_s!r}|".encode())
        for path in (first, second):
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise VoiceError(f"{path.name}: cannot read ({exc})") from exc
            digest.update(hashlib.sha256(data).digest())
        return digest.hexdigest()


def _valid(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        check_wav(path)
    except VoiceError:
        path.unlink(missing_ok=True)
        return False
    return True


class SecondLanguage:
    """Which card type hears which second language, and the joined clips for each prompt.

    ``renderers`` synthesise each language's words (one PromptRenderer per language, with
    that language's espeak voice); ``recorded`` are recorded second-language clips keyed
    ``"<outcome>.<lang>"`` (device.acting.clips), preferred over synthesis. ``prepare``
    builds the joined clips once, off the event loop; ``clip_for`` is then a look-up by the
    Chinese text being spoken and the card type. ValueError for a configuration that names
    a language without words or renderer.
    """

    def __init__(
        self,
        renderers: Mapping[str, PromptRenderer],
        card_languages: Mapping[str, str],
        out_dir: Path,
        *,
        texts: Mapping[str, Mapping[str, str]] = SECOND_LANGUAGE_PROMPTS,
        recorded: Mapping[str, Path] | None = None,
        bilingual: Bilingual | None = None,
    ) -> None:
        unknown = sorted(
            lang
            for lang in languages_in_use(card_languages)
            if lang not in texts or lang not in renderers
        )
        if unknown:
            raise ValueError(f"no prompts or no renderer for language(s) {unknown}")
        self.renderers = dict(renderers)
        self.card_languages = dict(card_languages)
        self.out_dir = Path(out_dir)
        self.texts = texts
        self.recorded = dict(recorded or {})
        self.bilingual = bilingual or Bilingual()
        # (Chinese text, language) → joined clip; replaced whole, never mutated, so a
        # look-up on the event loop never sees a half-built map from the preparing thread.
        self._clips: Mapping[tuple[str, str], Path] = MappingProxyType({})
        #: The second-language clips the pairs were joined from (a cache keeps them).
        self.sources: frozenset[Path] = frozenset()

    @property
    def clips(self) -> Mapping[tuple[str, str], Path]:
        """Joined clips by (Chinese text, language) (read-only)."""
        return self._clips

    def language_for(self, card_type: str) -> str:
        """The second language a card type hears, ``""`` for none (residents, unmapped)."""
        return self.card_languages.get(card_type, "")

    def clip_for(self, text: str, card_type: str) -> Path | None:
        """The joined clip to play for ``text`` and this card, or None: Chinese alone.

        None when the card type hears no second language, the pair did not fit the budget,
        or ``text`` was never prepared (a prompt the server sent that is not configured).
        """
        lang = self.language_for(card_type)
        return self._clips.get((text, lang)) if lang else None

    def prepare(self, prompts: Mapping[str, str], first: Mapping[str, Path]) -> int:
        """Join every configured prompt with its second-language clip; return how many.

        ``prompts`` is outcome → Chinese text (keys without second-language words, like a
        guard's test prompt, are skipped); ``first`` is Chinese text → its rendered or
        recorded clip. Blocks for synthesis: call it from a thread. Never raises: a
        language that cannot be rendered, or a pair over the budget, is logged and that
        prompt stays Chinese only.
        """
        built = dict(self._clips)
        sources: set[Path] = set(self.sources)
        for lang in sorted(languages_in_use(self.card_languages)):
            for outcome, text in prompts.items():
                clip = self._prepare_one(lang, outcome, first.get(text), sources)
                if clip is not None:
                    built[(text, lang)] = clip
        self._clips = MappingProxyType(built)
        self.sources = frozenset(sources)
        return len(built)

    def _prepare_one(
        self, lang: str, outcome: str, first: Path | None, sources: set[Path]
    ) -> Path | None:
        words = self.texts[lang].get(outcome)
        if words is None or first is None:
            return None
        try:
            key = clip_key(outcome, lang)
            second = self.recorded.get(key) or self._render(lang, words, first)
            sources.add(second)
            return self.bilingual.compose(first, second, self.out_dir, label=key)
        except VoiceError as exc:
            log.warning("no %s prompt for %s, the Chinese plays alone: %s", lang, outcome, exc)
            return None

    def _render(self, lang: str, words: str, first: Path) -> Path:
        """The second language's words, spoken a little faster where that makes the pair fit
        (espeak's length varies by a few per cent from render to render, and a pair at 2.9 s
        must not drop its English on a kiosk whose render came out at 3.04 s)."""
        renderer = self.renderers[lang]
        second = renderer.render(words)
        room = self.bilingual.budget_s - self.bilingual.gap_s - check_wav(first)
        if 0 < room < check_wav(second):
            return renderer.within(room).render(words)
        return second


if set(get_args(LanguageName)) != {""} | set(SECOND_LANGUAGE_PROMPTS):
    raise AssertionError("device.acting.languages: LanguageName and the prompt table disagree")
