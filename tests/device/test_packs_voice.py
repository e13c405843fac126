"""Remote voice settings and packs reaching a real voice (espeak renders, real audio checks):
device/voicesync.py, device/acting/tuning.py and Voice.retune."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.outcomes import DEFAULT_PROMPTS
from device.acting import audio
from device.acting.clips import ClipLibrary
from device.acting.languages import (
    DEFAULT_LANGUAGE_RATE,
    SECOND_LANGUAGE_PROMPTS,
    SECOND_LANGUAGE_SPEED_UP,
)
from device.acting.packs import RemoteVoice, pack_store
from device.acting.tuning import VoiceRecipe
from device.acting.voice import MockPlayer, PromptRenderer, VoiceParts
from device.acting.volume import VolumeSchedule
from device.config import TEST_PROMPT, DeviceConfig
from device.runtime import voice_for
from device.voicesync import VoiceSync
from tests.device.packkit import FakeServer, SignedPack, release_key, signed_pack, tone

NEW_CHECK = "请出示绿码"
PASS = DEFAULT_PROMPTS["pass"]
CHECK = DEFAULT_PROMPTS["check"]


def english_renderer(cache: Path) -> PromptRenderer:
    """The renderer the kiosk builds for English at the defaults (same cache files)."""
    rate = DEFAULT_LANGUAGE_RATE
    return PromptRenderer(
        cache, voice="gmw/en-us", rate=rate, max_rate=round(rate * SECOND_LANGUAGE_SPEED_UP)
    )


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every prompt these tests speak, rendered once (per-test caches start as copies, so a
    test that prunes its cache cannot take files from another)."""
    cache = tmp_path_factory.mktemp("pack-prompts")
    PromptRenderer(cache).prerender([*DEFAULT_PROMPTS.values(), TEST_PROMPT, NEW_CHECK])
    english = english_renderer(cache)
    english.prerender(SECOND_LANGUAGE_PROMPTS["en"].values())
    return cache


@pytest.fixture
def keys() -> tuple[Any, str]:
    return release_key()


@pytest.fixture
def pack(tmp_path: Path, keys: tuple[Any, str]) -> SignedPack:
    return signed_pack(keys[0], {"pass": tone(tmp_path / "pass.flac")}, {"check": NEW_CHECK})


class Kiosk:
    """A kiosk's voice and its remote settings, on its own state directory."""

    def __init__(self, tmp_path: Path, warm: Path, release: str, **voice: Any) -> None:
        cache = tmp_path / "prompts"
        if not cache.exists():
            shutil.copytree(warm, cache)
        self.state = tmp_path / "state"
        self.config = DeviceConfig.from_dict(
            {
                "bundle": str(tmp_path / "bundle.json"),
                "state_dir": str(self.state),
                "voice": {"player": "mock", "cache_dir": str(cache), **voice},
                "update": {"release_key": release},
            }
        )
        self.player = MockPlayer()
        self.voice = voice_for(self.config, self.state, self.player)

    def sync(self, server: FakeServer) -> VoiceSync:
        recipe = VoiceRecipe.from_config(self.config, self.state)
        release = self.config.update.release_key
        return VoiceSync(self.voice, recipe, pack_store(self.state), server, release)


@pytest.fixture
async def kiosk(tmp_path: Path, warm_cache: Path, keys: tuple[Any, str]) -> AsyncIterator[Kiosk]:
    kiosk = Kiosk(tmp_path, warm_cache, keys[1])
    await kiosk.voice.start()
    yield kiosk
    await kiosk.voice.close()


async def test_a_signed_pack_is_spoken_levelled_like_every_prompt(
    kiosk: Kiosk, pack: SignedPack
) -> None:
    voice = kiosk.voice
    synthesised = voice.clip_for(PASS, "pass")
    report = await kiosk.sync(FakeServer(pack)).apply(RemoteVoice(pack=pack.sha256))
    assert report == {"pack": f"installed test-words@{pack.sha256[:12]}", "voice": "changed"}
    clip = voice.clip_for(PASS, "pass")
    assert clip is not None and clip != synthesised
    assert clip.parent == voice.renderer.cache_dir  # levelled into the prompt cache
    levelled = audio.load_clip(clip)
    assert abs(audio.loudness(levelled) - voice.renderer.loudness_lufs) < 1.0
    assert audio.peak_dbfs(levelled) <= voice.renderer.peak_dbfs + 0.1
    await voice.say("a site's own words", outcome="pass")  # a pack's clip, whatever the text
    assert kiosk.player.played[-1][0] == clip
    # the pack's words for ``check`` are spoken for that outcome, whatever text a tap brings
    assert voice.clip_for(CHECK, "check") == voice.renderer.path_for(NEW_CHECK)
    assert voice.health()["pack"] == f"test-words@{pack.sha256[:12]}"


async def test_a_pack_with_a_bad_signature_leaves_the_old_words(
    kiosk: Kiosk, pack: SignedPack, keys: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    before = kiosk.voice.clip_for(PASS, "pass")
    forged = signed_pack(release_key()[0], {"pass": pack_file(kiosk)})
    server = FakeServer(forged)
    sync = kiosk.sync(server)
    with caplog.at_level(logging.ERROR, "device.voicesync"):
        report = await sync.apply(RemoteVoice(pack=forged.sha256))
    assert report["pack"].startswith("refused: ")
    assert "not signed by the pinned release key" in report["pack"]
    assert f"voice pack {forged.sha256[:12]} refused" in caplog.text
    assert kiosk.voice.clip_for(PASS, "pass") == before and "pack" not in kiosk.voice.health()
    await sync.apply(RemoteVoice(pack=forged.sha256))  # the same configuration again
    assert len(server.fetched) == 1 and sync.pending is None  # not fetched again


def pack_file(kiosk: Kiosk) -> Path:
    return tone(kiosk.state.parent / "forged.flac", 300)


async def test_a_kiosk_without_a_release_key_refuses_packs_and_says_so_once(
    tmp_path: Path, warm_cache: Path, pack: SignedPack, caplog: pytest.LogCaptureFixture
) -> None:
    kiosk = Kiosk(tmp_path, warm_cache, "")
    await kiosk.voice.start()
    server = FakeServer(pack)
    sync = kiosk.sync(server)
    with caplog.at_level(logging.ERROR, "device.voicesync"):
        for _ in range(2):
            report = await sync.apply(RemoteVoice(pack=pack.sha256))
            assert report["pack"].startswith("refused: no release key is pinned")
    assert caplog.text.count("pins no release key") == 1
    assert server.fetched == [] and kiosk.voice.pack is None
    await kiosk.voice.close()


async def test_a_pack_that_cannot_be_fetched_now_is_tried_again(
    kiosk: Kiosk, pack: SignedPack
) -> None:
    server = FakeServer(pack)
    server.offline = True
    sync = kiosk.sync(server)
    report = await sync.apply(RemoteVoice(pack=pack.sha256, languages={"J": "en"}))
    assert report["pack"].startswith("pending: ")
    assert sync.pending == RemoteVoice(pack=pack.sha256, languages={"J": "en"})
    assert kiosk.voice.pack is None
    second = kiosk.voice.second_language
    assert second is not None and second.language_for("J") == "en"  # applied meanwhile
    assert await sync.retry() is not None and sync.pending is not None  # still offline
    server.offline = False
    report = await sync.retry() or {}
    assert report["pack"].startswith("installed ") and sync.pending is None
    assert kiosk.voice.pack == f"test-words@{pack.sha256[:12]}"
    assert await sync.retry() is None


async def test_a_restart_without_network_speaks_the_last_pack_schedule_and_languages(
    tmp_path: Path, warm_cache: Path, kiosk: Kiosk, pack: SignedPack, keys: tuple[Any, str]
) -> None:
    remote = RemoteVoice(
        pack=pack.sha256, volume_schedule=(("00:00", "00:00", -10.0),), languages={"J": "en"}
    )
    await kiosk.sync(FakeServer(pack)).apply(remote)
    spoken = kiosk.voice.clip_for(PASS, "pass")
    await kiosk.voice.close()

    again = Kiosk(tmp_path, warm_cache, keys[1])  # a new process, and no server at all
    await again.voice.start()
    assert again.voice.clip_for(PASS, "pass") == spoken
    assert again.voice.clip_for(CHECK, "check") == again.voice.renderer.path_for(NEW_CHECK)
    assert again.voice.schedule.gains() == {-10.0}
    second = again.voice.second_language
    assert second is not None and second.language_for("J") == "en"
    assert again.voice.health()["pack"] == f"test-words@{pack.sha256[:12]}"
    await again.voice.close()


async def test_remote_schedule_and_languages_override_the_kiosks_own(
    tmp_path: Path, warm_cache: Path, keys: tuple[Any, str], pack: SignedPack
) -> None:
    kiosk = Kiosk(
        tmp_path,
        warm_cache,
        keys[1],
        volume_schedule=[{"start": "22:00", "end": "07:00", "gain_db": -6}],
        languages={"I": "", "Y": ""},
    )
    english = english_renderer(kiosk.voice.renderer.cache_dir)
    english.path_for(SECOND_LANGUAGE_PROMPTS["en"]["pass"]).unlink()
    await kiosk.voice.start()
    assert kiosk.voice.schedule.gains() == {-6.0} and kiosk.voice.second_language is None
    remote = RemoteVoice(volume_schedule=(("12:00", "13:00", -20.0),), languages={"I": "en"})
    report = await kiosk.sync(FakeServer(pack)).apply(remote)
    assert report == {"pack": "none", "voice": "changed"}
    assert kiosk.voice.schedule.gains() == {-20.0}
    second = kiosk.voice.second_language
    assert second is not None
    assert [second.language_for(c) for c in "IYJ"] == ["en", "", ""]  # key by key
    # the English words were rendered for I cards (whether a pair fits 3 s depends on the
    # render's length, which espeak varies by a few per cent: not this test's business)
    assert english.cached(SECOND_LANGUAGE_PROMPTS["en"]["pass"]) is not None
    await kiosk.voice.close()


async def test_a_language_the_kiosk_cannot_speak_is_refused_for_that_card(
    kiosk: Kiosk, pack: SignedPack
) -> None:
    report = await kiosk.sync(FakeServer(pack)).apply(RemoteVoice(languages={"J": "fr", "I": ""}))
    assert report["refused"] == {"voice.languages.J": "no espeak voice or words for 'fr'"}
    second = kiosk.voice.second_language
    assert second is not None and [second.language_for(c) for c in "IJ"] == ["", ""]


async def test_no_pack_any_more_brings_the_kiosks_own_words_back(
    kiosk: Kiosk, pack: SignedPack
) -> None:
    synthesised = kiosk.voice.clip_for(PASS, "pass")
    sync = kiosk.sync(FakeServer(pack))
    await sync.apply(RemoteVoice(pack=pack.sha256))
    assert kiosk.voice.clip_for(PASS, "pass") != synthesised
    report = await sync.apply(RemoteVoice(pack=""))
    assert report == {"pack": "none", "voice": "changed"}
    assert kiosk.voice.clip_for(PASS, "pass") == synthesised and kiosk.voice.pack is None
    assert kiosk.voice.clip_for(CHECK, "check") == kiosk.voice.renderer.path_for(CHECK)
    assert not (kiosk.state / "voice-packs" / pack.sha256).exists()


async def test_a_bad_clip_in_a_pack_is_named_and_its_prompt_synthesised(
    kiosk: Kiosk, keys: tuple[Any, str]
) -> None:
    long = tone(kiosk.state.parent / "long.flac", seconds=4.0)
    bad = signed_pack(keys[0], {"pass": long, "check": tone(kiosk.state.parent / "c.flac")})
    await kiosk.sync(FakeServer(bad)).apply(RemoteVoice(pack=bad.sha256))
    assert kiosk.voice.clip_for(PASS, "pass") == kiosk.voice.renderer.path_for(PASS)
    assert kiosk.voice.clip_for(CHECK, "check") != kiosk.voice.renderer.path_for(CHECK)
    (problem,) = kiosk.voice.health()["clip_problems"]
    assert problem.startswith(f"pass = {kiosk.state / 'voice-packs' / bad.sha256 / 'pass.flac'}")
    assert problem.endswith("pass.flac: too long: 4.0 s > 2.5 s")


async def test_pack_words_for_the_second_language_replace_the_built_in_ones(
    kiosk: Kiosk, keys: tuple[Any, str]
) -> None:
    words = signed_pack(keys[0], {}, {"check.en": "See staff"})
    await kiosk.sync(FakeServer(words)).apply(RemoteVoice(pack=words.sha256))
    second = kiosk.voice.second_language
    assert second is not None and second.texts["en"]["check"] == "See staff"
    assert second.texts["en"]["pass"] == SECOND_LANGUAGE_PROMPTS["en"]["pass"]
    assert second.renderers["en"].cached("See staff") is not None


# -- Voice.retune -----------------------------------------------------------------------------


class SlowLibrary(ClipLibrary):
    """A clip library whose load waits for the test (or fails)."""

    def __init__(self, *args: Any, fail: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = fail

    def load(self) -> dict[str, Path]:
        self.started.set()
        assert self.release.wait(10)
        if self.fail:
            raise RuntimeError("disk on fire")
        return super().load()


async def test_taps_during_a_change_hear_the_old_set_then_the_new_one(
    kiosk: Kiosk, tmp_path: Path
) -> None:
    voice = kiosk.voice
    old = voice.clip_for(PASS, "pass")
    library = SlowLibrary({"pass": str(tone(tmp_path / "p.flac"))}, voice.renderer.cache_dir)
    change = asyncio.create_task(voice.retune(VoiceParts(dict(voice.prompts), library)))
    assert await asyncio.to_thread(library.started.wait, 10)
    assert voice.clip_for(PASS, "pass") == old  # a tap now: the old set, whole
    await voice.say(PASS, outcome="pass")
    library.release.set()
    assert await change
    assert voice.clip_for(PASS, "pass") not in (None, old)
    assert kiosk.player.played[-1][0] == old


async def test_a_change_that_fails_keeps_the_old_set(
    kiosk: Kiosk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    voice = kiosk.voice
    old = {t: voice.clip_for(t, k) for k, t in voice.prompts.items()}
    library = SlowLibrary({}, voice.renderer.cache_dir, fail=True)
    library.release.set()
    parts = VoiceParts({"pass": "全新的话"}, library, VolumeSchedule([("00:00", "00:00", -3)]))
    with caplog.at_level(logging.ERROR):
        assert not await voice.retune(parts)
    assert "voice not changed, the previous words stay: disk on fire" in caplog.text
    assert {t: voice.clip_for(t, k) for k, t in voice.prompts.items()} == old
    assert voice.schedule.gains() == frozenset()


async def test_cache_files_no_prompt_uses_any_more_are_removed(kiosk: Kiosk) -> None:
    voice = kiosk.voice
    renderer = voice.renderer
    first, second, third = CHECK, NEW_CHECK, DEFAULT_PROMPTS["nat_expired"]
    base = dict(voice.prompts)
    kept_by_others = {renderer.path_for(t) for k, t in base.items() if k != "check"}
    for words in (second, third):
        assert await voice.retune(VoiceParts({**base, "check": words}, voice.library))
    assert not renderer.path_for(first).exists()  # two changes ago: removed
    assert renderer.path_for(second).exists()  # the previous words stay until the next change
    assert renderer.path_for(third).exists()
    assert all(p.exists() for p in kept_by_others)


async def test_an_oversized_download_is_refused_and_a_cut_one_tried_again(
    kiosk: Kiosk, pack: SignedPack
) -> None:
    before = kiosk.voice.clip_for(PASS, "pass")
    server = FakeServer(pack)
    server.body = pack.data + b"\0" * 4096  # more than the server announced
    sync = kiosk.sync(server)
    report = await sync.apply(RemoteVoice(pack=pack.sha256))
    assert report["pack"].startswith("refused: the voice pack is larger than")
    assert sync.pending is None and kiosk.voice.clip_for(PASS, "pass") == before

    server = FakeServer(pack)
    server.body = pack.data[: len(pack.data) // 2]  # the connection dropped half way
    sync = kiosk.sync(server)
    report = await sync.apply(RemoteVoice(pack=pack.sha256))
    assert report["pack"].startswith("pending: ") and sync.pending is not None
    assert kiosk.voice.clip_for(PASS, "pass") == before
    assert not (kiosk.state / "voice-packs" / pack.sha256).exists()
