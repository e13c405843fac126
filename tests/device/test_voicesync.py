"""When VoiceSync tries a pack again (device/voicesync.py): a disk that will not take a pack
costs a download after waits that double, not one at every heartbeat. The voice and recipe
are stand-ins (tests/device/test_packs_voice.py drives a real voice); the store, the pack
and its verification are real."""

from __future__ import annotations

import errno
import logging
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from device.acting.packs import InstalledPack, PackStore, RemoteVoice
from device.voicesync import FIRST_DISK_WAIT_S, MAX_DISK_WAIT_S, VoiceSync
from tests.device.packkit import FakeServer, SignedPack, release_key, signed_pack, tone

HEARTBEAT_S = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FullDisk(PackStore):
    """A real store on a card that is full until ``full`` is cleared; ``tries`` records when
    each install was attempted (each one after a whole download)."""

    def __init__(self, root: Path, clock: Clock) -> None:
        super().__init__(root)
        self.clock = clock
        self.full = True
        self.tries: list[float] = []

    def install(self, data: bytes, signature: str, release_key: str) -> InstalledPack:
        self.tries.append(self.clock())
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().install(data, signature, release_key)


class Voice:
    """What VoiceSync asks of the voice: the pack it speaks, and a retune that works."""

    def __init__(self) -> None:
        self.pack: str | None = None

    async def retune(self, parts: Any) -> bool:
        self.pack = parts.pack
        return True


class Recipe:
    def parts(
        self, remote: RemoteVoice, pack: InstalledPack | None = None
    ) -> tuple[Any, dict[str, str]]:
        return SimpleNamespace(pack=pack.label if pack else None), {}


@pytest.fixture
def keys() -> tuple[Any, str]:
    return release_key()


@pytest.fixture
def pack(tmp_path: Path, keys: tuple[Any, str]) -> SignedPack:
    return signed_pack(keys[0], {"pass": tone(tmp_path / "pass.flac")})


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in pairwise(times)]


async def heartbeats(sync: VoiceSync, clock: Clock, seconds: float) -> None:
    """The agent's loop: a retry after each heartbeat."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now += HEARTBEAT_S
        await sync.retry()


async def test_a_pack_the_disk_refuses_is_tried_again_less_and_less_often(
    tmp_path: Path, pack: SignedPack, keys: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = FullDisk(tmp_path / "voice-packs", clock)
    server = FakeServer(pack)
    voice = Voice()
    sync = VoiceSync(voice, Recipe(), store, server, keys[1], clock=clock)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, "device.voicesync"):
        report = await sync.apply(RemoteVoice(pack=pack.sha256))
        assert report["pack"] == "pending: cannot write it ([Errno 28] No space left on device)"
        await heartbeats(sync, clock, 5 * 3600)
    assert gaps(store.tries)[:8] == [FIRST_DISK_WAIT_S * 2**n for n in range(8)]
    assert set(gaps(store.tries)[8:]) == {MAX_DISK_WAIT_S}  # 25 s doubling, up to an hour
    assert len(server.fetched) == len(store.tries) == 12  # not 3600 downloads of the pack
    assert "not installed (disk, 1 failure(s) in a row)" in caplog.text
    assert "tried again in 25 s" in caplog.text and "tried again in 3600 s" in caplog.text
    assert sync.pending is not None and voice.pack is None

    # a new configuration naming the same pack (say, a new schedule) waits too
    report = await sync.apply(RemoteVoice(pack=pack.sha256, volume_schedule=()))
    assert report["pack"].startswith("pending: cannot write it ([Errno 28] No space left")
    assert "; next try in " in report["pack"] and len(store.tries) == 12

    store.full = False  # room made on the card: the next try after the wait installs it
    await heartbeats(sync, clock, MAX_DISK_WAIT_S)
    assert voice.pack == f"test-words@{pack.sha256[:12]}" and sync.pending is None
    assert len(store.tries) == 13


async def test_another_pack_or_success_starts_the_waits_afresh(
    tmp_path: Path, pack: SignedPack, keys: tuple[Any, str]
) -> None:
    clock = Clock()
    store = FullDisk(tmp_path / "voice-packs", clock)
    sync = VoiceSync(Voice(), Recipe(), store, FakeServer(pack), keys[1], clock=clock)  # type: ignore[arg-type]
    await sync.apply(RemoteVoice(pack=pack.sha256))
    await heartbeats(sync, clock, 400)  # tries at +0, 25, 75, 175, 375: the next wait 400 s
    assert len(store.tries) == 5

    other = signed_pack(keys[0], {"check": tone(tmp_path / "c.flac", 300)}, name="v2")
    sync.client = FakeServer(other)
    named = clock.now
    await sync.apply(RemoteVoice(pack=other.sha256))  # another pack: tried at once
    await heartbeats(sync, clock, FIRST_DISK_WAIT_S)  # and again after the first wait
    assert store.tries[-2:] == [named, named + FIRST_DISK_WAIT_S]

    store.full = False
    await heartbeats(sync, clock, 2 * FIRST_DISK_WAIT_S)
    assert sync.pending is None
    store.full = True  # full again later: the first wait is the short one again
    sync.client = FakeServer(pack)
    await sync.apply(RemoteVoice(pack=pack.sha256))
    await heartbeats(sync, clock, FIRST_DISK_WAIT_S)
    assert gaps(store.tries)[-1] == FIRST_DISK_WAIT_S


class Unready(Voice):
    """A voice whose new words do not render (espeak broken, a full disk) ``failures`` times."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.tries = 0

    async def retune(self, parts: Any) -> bool:
        self.tries += 1
        if self.tries <= self.failures:
            return False
        return await super().retune(parts)


@pytest.mark.parametrize("with_pack", [True, False])
async def test_words_the_kiosk_cannot_prepare_are_tried_again_after_growing_waits(
    tmp_path: Path, pack: SignedPack, keys: tuple[Any, str], with_pack: bool
) -> None:
    """The old words keep speaking, and the change is not forgotten: it is tried again after
    later heartbeats (25 s, 50 s, … apart), with a pack installed or only new settings."""
    clock = Clock()
    store = PackStore(tmp_path / "voice-packs")
    voice = Unready(failures=3)
    sync = VoiceSync(voice, Recipe(), store, FakeServer(pack), keys[1], clock=clock)  # type: ignore[arg-type]
    wanted = RemoteVoice(pack=pack.sha256 if with_pack else None, volume_schedule=())
    report = await sync.apply(wanted)
    assert report["voice"] == "not changed: the new words could not be prepared"
    assert sync.pending == wanted and voice.tries == 1
    await heartbeats(sync, clock, FIRST_DISK_WAIT_S - HEARTBEAT_S)
    assert voice.tries == 1  # not at every heartbeat
    await heartbeats(sync, clock, FIRST_DISK_WAIT_S + 2 * FIRST_DISK_WAIT_S + HEARTBEAT_S)
    assert voice.tries == 3
    await heartbeats(sync, clock, 4 * FIRST_DISK_WAIT_S + HEARTBEAT_S)
    assert voice.tries == 4 and sync.pending is None
    assert voice.pack == (f"test-words@{pack.sha256[:12]}" if with_pack else None)
    await heartbeats(sync, clock, MAX_DISK_WAIT_S)
    assert voice.tries == 4  # done: nothing more to try
