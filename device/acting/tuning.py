"""What the kiosk says, from its own file and what an admin sent (docs/voice.md).

The kiosk's ``[voice]`` section is the base. The remote ``voice.*`` settings (already merged
fleet < site < device by the server) and the installed voice pack override it key by key:

* a pack's clip for a key (``pass``, ``pass.en``) replaces the file's clip for that key;
* a pack's prompt for an outcome (``pass``) replaces that outcome's words, and they are
  spoken whatever text a tap brings (as a recording is); one for ``pass.en`` replaces the
  English words joined after the Chinese prompt;
* ``voice.volume_schedule`` replaces the file's schedule, whole;
* ``voice.languages`` replaces the second language of the card types it names; a language
  the kiosk has no espeak voice or words for is refused (that card type keeps its own).

:class:`VoiceRecipe` turns these into the :class:`~device.acting.voice.VoiceParts` a
:class:`~device.acting.voice.Voice` starts or is retuned with, so the agent at start and
the agent receiving new settings build the very same voice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from core.outcomes import DEFAULT_PROMPTS
from device.acting.clips import ClipLibrary, split_key
from device.acting.languages import (
    SECOND_LANGUAGE_PROMPTS,
    SECOND_LANGUAGE_SPEED_UP,
    SecondLanguage,
    languages_in_use,
)
from device.acting.packs import InstalledPack, RemoteVoice, StoredVoice, pack_store
from device.acting.voice import MAX_PROMPT_S, PromptRenderer, VoiceParts
from device.acting.volume import VolumeSchedule
from device.update.settings import UpdateSettings

if TYPE_CHECKING:
    from device.config import DeviceConfig, VoiceConfig

__all__ = ["VoiceRecipe", "release_key", "starting_voice"]


@dataclass(frozen=True)
class VoiceRecipe:
    """The kiosk's own voice settings, and how remote settings and a pack change them."""

    settings: VoiceConfig
    #: Prompts a guard's command may ask for (``speak_test``, ``guard_open``).
    extra_prompts: Mapping[str, str]
    cache_dir: Path

    @classmethod
    def from_config(cls, config: DeviceConfig, state: Path) -> VoiceRecipe:
        settings = config.voice
        extra = {"speak_test": config.commands.test_prompt}
        if config.commands.gate_prompt:
            extra["guard_open"] = config.commands.gate_prompt
        cache_dir = Path(settings.cache_dir) if settings.cache_dir else state / "prompts"
        return cls(settings, MappingProxyType(extra), cache_dir)

    def renderer(self) -> PromptRenderer:
        return PromptRenderer.for_settings(self.cache_dir, self.settings)

    def parts(
        self, remote: RemoteVoice, pack: InstalledPack | None = None
    ) -> tuple[VoiceParts, dict[str, str]]:
        """The voice for these remote settings and pack, and what of them was refused."""
        refused: dict[str, str] = {}
        settings = self.settings
        prompts = {outcome: settings.prompt(outcome) for outcome in DEFAULT_PROMPTS}
        prompts.update(self.extra_prompts)
        clips = {key: str(path) for key, path in settings.clips.items()}
        pack_words: dict[str, str] = {}
        if pack is not None:
            pack_words = {k: t for k, t in pack.prompts.items() if "." not in k}
            prompts.update(pack_words)
            clips.update({key: str(path) for key, path in pack.clips.items()})
        # Recorded clips are checked and levelled like the synthesised prompts, into the same
        # cache, when the voice starts (Voice.start); the schedule is applied by the player.
        library = ClipLibrary(
            clips,
            self.cache_dir,
            target_lufs=settings.loudness_lufs,
            peak_dbfs=settings.peak_dbfs,
            max_duration_s=MAX_PROMPT_S,
        )
        windows = (
            remote.volume_schedule
            if remote.volume_schedule is not None
            else tuple((w.start, w.end, w.gain_db) for w in settings.volume_schedule)
        )
        second = self._second_language(remote, pack, refused)
        parts = VoiceParts(
            prompts,
            library,
            VolumeSchedule(windows),
            second,
            frozenset(pack_words),
            pack.label if pack is not None else None,
        )
        return parts, refused

    def _second_language(
        self, remote: RemoteVoice, pack: InstalledPack | None, refused: dict[str, str]
    ) -> SecondLanguage | None:
        """The card holder's language (I/Y cards hear English by default); None: Chinese
        only. ``refused`` gets the remote card types whose language cannot be spoken."""
        settings = self.settings
        voices = settings.voices_by_language()
        texts = _second_texts(pack)
        card_languages = dict(settings.card_languages())
        for card, lang in (remote.languages or {}).items():
            if lang and (lang not in voices or lang not in texts):
                refused[f"voice.languages.{card}"] = f"no espeak voice or words for {lang!r}"
            else:
                card_languages[card] = lang
        used = languages_in_use(card_languages)
        if not used:
            return None
        renderers = {
            lang: PromptRenderer(
                self.cache_dir,
                voice=voices[lang],
                rate=settings.language_rate,
                loudness_lufs=settings.loudness_lufs,
                peak_dbfs=settings.peak_dbfs,
                max_rate=round(settings.language_rate * SECOND_LANGUAGE_SPEED_UP),
            )
            for lang in used
        }
        return SecondLanguage(renderers, card_languages, self.cache_dir / "bilingual", texts=texts)


def _second_texts(pack: InstalledPack | None) -> Mapping[str, Mapping[str, str]]:
    """The second-language words, with a pack's (``pass.en``) over the built-in ones."""
    texts = {lang: dict(words) for lang, words in SECOND_LANGUAGE_PROMPTS.items()}
    for key, text in (pack.prompts if pack is not None else {}).items():
        outcome, lang = split_key(key)
        if lang:
            texts.setdefault(lang, {})[outcome] = text
    return MappingProxyType({lang: MappingProxyType(w) for lang, w in texts.items()})


def release_key(config: DeviceConfig) -> str:
    """The release key the kiosk pins (``[update] release_key``): it signs voice packs too."""
    return UpdateSettings.from_config(config).release_key


def starting_voice(
    config: DeviceConfig, state: Path, stored: StoredVoice | None = None
) -> tuple[VoiceRecipe, VoiceParts, dict[str, str]]:
    """The voice the agent starts with (and the doctor checks): kiosk.toml, with the remote
    settings and voice pack it was last given (``stored``: already read), and what of them
    was refused."""
    recipe = VoiceRecipe.from_config(config, state)
    remote, pack = stored or pack_store(state).stored(release_key(config))
    parts, refused = recipe.parts(remote, pack)
    return recipe, parts, refused
