"""The kiosk's voice pack store and download (device/acting/packs.py, device/link/voicepacks.py)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from core.voicepack import MAX_PACK_BYTES, VoicePackError, pack_sha256
from device.acting import packs
from device.acting.packs import PackStore, RemoteVoice
from device.errors import ServerUnavailable
from device.link.voicepacks import download_pack
from tests.device.packkit import FakeServer, SignedPack, release_key, signed_pack, tone


@pytest.fixture
def keys() -> tuple[Any, str]:
    return release_key()


@pytest.fixture
def pack(tmp_path: Path, keys: tuple[Any, str]) -> SignedPack:
    clips = {"pass": tone(tmp_path / "pass.flac"), "pass.en": tone(tmp_path / "en.flac", 240)}
    return signed_pack(keys[0], clips, {"check": "请出示绿码", "pass.en": "Please pass"})


def test_an_installed_pack_is_there_after_a_restart(
    tmp_path: Path, pack: SignedPack, keys: tuple[Any, str]
) -> None:
    store = PackStore(tmp_path / "voice-packs")
    installed = store.install(pack.data, pack.signature, keys[1])
    assert installed.sha256 == pack.sha256 and installed.name == "test-words"
    assert installed.label == f"test-words@{pack.sha256[:12]}"
    assert set(installed.clips) == {"pass", "pass.en"}
    assert installed.clips["pass"].read_bytes() == (tmp_path / "pass.flac").read_bytes()
    assert dict(installed.prompts) == {"check": "请出示绿码", "pass.en": "Please pass"}
    again = PackStore(tmp_path / "voice-packs").current(keys[1])  # a new process, offline
    assert again == installed


def test_a_pack_signed_by_another_key_changes_nothing(
    tmp_path: Path, pack: SignedPack, keys: tuple[Any, str]
) -> None:
    store = PackStore(tmp_path / "voice-packs")
    store.install(pack.data, pack.signature, keys[1])
    other_key, _ = release_key()
    forged = signed_pack(other_key, {"pass": tone(tmp_path / "f.flac", 300)})
    with pytest.raises(VoicePackError, match="not signed by the pinned release key"):
        store.install(forged.data, forged.signature, keys[1])
    current = store.current(keys[1])
    assert current is not None and current.sha256 == pack.sha256
    assert sorted(p.name for p in store.root.iterdir()) == sorted([pack.sha256, "current"])


def test_without_a_pinned_release_key_every_pack_is_refused(
    tmp_path: Path, pack: SignedPack
) -> None:
    store = PackStore(tmp_path / "voice-packs")
    with pytest.raises(
        VoicePackError, match=r"no release key is pinned \(\[update\] release_key\)"
    ):
        store.install(pack.data, pack.signature, "")
    assert store.current("") is None
    assert not store.root.exists()


def test_a_damaged_pack_on_disk_is_not_used(
    tmp_path: Path, pack: SignedPack, keys: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    store = PackStore(tmp_path / "voice-packs")
    store.install(pack.data, pack.signature, keys[1])
    zipped = store.root / pack.sha256 / "pack.zip"
    zipped.write_bytes(zipped.read_bytes()[:-10])
    with caplog.at_level(logging.ERROR):
        assert store.current(keys[1]) is None
    assert f"installed voice pack {pack.sha256[:12]} not used" in caplog.text


def test_a_clip_damaged_on_disk_is_not_played(
    tmp_path: Path, pack: SignedPack, keys: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The zip still checks, but an extracted clip (what the voice plays) changed on the card."""
    store = PackStore(tmp_path / "voice-packs")
    installed = store.install(pack.data, pack.signature, keys[1])
    clip = installed.clips["pass"]
    damaged = bytearray(clip.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    clip.write_bytes(bytes(damaged))
    with caplog.at_level(logging.ERROR):
        assert store.current(keys[1]) is None
    assert f"extracted files differ from the pack: {clip}" in caplog.text


@pytest.mark.parametrize("damage", ["zip", "clip", "missing clip", "file for directory"])
def test_a_pack_damaged_on_disk_is_installed_again(
    tmp_path: Path,
    pack: SignedPack,
    keys: tuple[Any, str],
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server gives the pack again: the damaged copy is replaced, not refused forever."""
    store = PackStore(tmp_path / "voice-packs")
    first = store.install(pack.data, pack.signature, keys[1])
    directory = store.root / pack.sha256
    if damage == "zip":
        (directory / "pack.zip").write_bytes(pack.data[:-10])
    elif damage == "clip":
        first.clips["pass"].write_bytes(b"not the recording")
    elif damage == "missing clip":
        first.clips["pass.en"].unlink()
    else:
        shutil.rmtree(directory)
        directory.write_bytes(b"")
    assert store.current(keys[1]) is None
    with caplog.at_level(logging.WARNING):
        again = store.install(pack.data, pack.signature, keys[1])
    assert again == first
    assert again.clips["pass"].read_bytes() == (tmp_path / "pass.flac").read_bytes()
    assert PackStore(store.root).current(keys[1]) == first
    assert f"voice pack {pack.sha256[:12]}: the copy on disk is damaged" in caplog.text


def test_a_pack_the_disk_does_not_read_back_is_a_disk_failure(
    tmp_path: Path, pack: SignedPack, keys: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written clips that read back otherwise are the card's fault (OSError: tried again
    later), not the pack's (VoicePackError: refused until another is named); the pack in
    use stays."""
    store = PackStore(tmp_path / "voice-packs")
    store.install(pack.data, pack.signature, keys[1])
    newer = signed_pack(keys[0], {"check": tone(tmp_path / "c.flac", 300)}, name="v2")
    write = packs._write_synced

    def bad_card(path: Path, data: bytes) -> None:
        write(path, data if path.suffix in ("", ".zip") else data[:-1] + b"?")

    monkeypatch.setattr(packs, "_write_synced", bad_card)
    with pytest.raises(OSError, match="does not read back as written: extracted files differ"):
        store.install(newer.data, newer.signature, keys[1])
    monkeypatch.undo()
    current = store.current(keys[1])
    assert current is not None and current.sha256 == pack.sha256
    assert not (store.root / newer.sha256).exists()


def test_a_start_uses_the_installed_pack_only_if_the_saved_settings_name_it(
    tmp_path: Path, pack: SignedPack, keys: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A change cut half way (the new pack installed, its settings not saved) leaves them
    disagreeing: a start then speaks neither pack rather than the other one."""
    store = PackStore(tmp_path / "voice-packs")
    other = signed_pack(keys[0], {"check": tone(tmp_path / "c.flac", 300)}, name="v2")
    store.install(pack.data, pack.signature, keys[1])
    store.save_settings(RemoteVoice(pack=pack.sha256, languages={"J": "en"}))
    remote, installed = store.stored(keys[1])
    assert installed is not None and installed.sha256 == pack.sha256
    store.install(other.data, other.signature, keys[1])  # then the power is cut
    with caplog.at_level(logging.ERROR):
        remote, installed = store.stored(keys[1])
    assert installed is None and remote.pack == pack.sha256 and remote.languages == {"J": "en"}
    assert (
        f"installed voice pack v2@{other.sha256[:12]} not used: the saved remote settings "
        f"name {pack.sha256[:12]}" in caplog.text
    )
    store.save_settings(RemoteVoice())  # no pack named: none used, nothing to report
    assert store.stored(keys[1]) == (RemoteVoice(), None)


def test_a_new_pack_replaces_the_old_one_on_disk_and_clear_removes_it(
    tmp_path: Path, pack: SignedPack, keys: tuple[Any, str]
) -> None:
    store = PackStore(tmp_path / "voice-packs")
    store.install(pack.data, pack.signature, keys[1])
    (store.root / ".tmp-cut-short").mkdir()  # what a power cut mid-install leaves
    newer = signed_pack(keys[0], {"check": tone(tmp_path / "c.flac", 300)}, name="v2")
    installed = store.install(newer.data, newer.signature, keys[1])
    assert installed.label.startswith("v2@")
    assert sorted(p.name for p in store.root.iterdir()) == sorted([newer.sha256, "current"])
    store.clear()
    assert list(store.root.iterdir()) == []
    assert store.current(keys[1]) is None


def test_remote_settings_are_kept_for_a_start_without_network(tmp_path: Path) -> None:
    config = {
        "voice.pack": "",
        "voice.volume_schedule": [{"start": "22:00", "end": "07:00", "gain_db": -12}],
        "voice.languages": {"J": "en"},
        "verify.deadline_s": 1.0,
    }
    remote, refused = RemoteVoice.from_config(config)
    assert refused == {}
    assert remote.pack == "" and remote.volume_schedule == (("22:00", "07:00", -12.0),)
    store = PackStore(tmp_path / "voice-packs")
    assert store.load_settings() == RemoteVoice()
    store.save_settings(remote)
    assert PackStore(tmp_path / "voice-packs").load_settings() == remote


def test_bad_remote_settings_are_refused_key_by_key(tmp_path: Path) -> None:
    remote, refused = RemoteVoice.from_config(
        {"voice.pack": "abc", "voice.languages": {"I": "English"}, "voice.volume_schedule": []}
    )
    assert remote == RemoteVoice(volume_schedule=())
    assert set(refused) == {"voice.pack", "voice.languages"}
    assert "64 hex digits" in refused["voice.pack"]


def test_a_damaged_settings_file_reads_as_unset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PackStore(tmp_path)
    (tmp_path / "settings.json").write_text("{not json")
    with caplog.at_level(logging.ERROR):
        assert store.load_settings() == RemoteVoice()
    (tmp_path / "settings.json").write_text(json.dumps({"voice.languages": {"X": "en"}}))
    assert store.load_settings() == RemoteVoice()
    assert "card type 'X'" in caplog.text


# -- download ---------------------------------------------------------------------------------


async def test_the_named_pack_is_downloaded(pack: SignedPack) -> None:
    server = FakeServer(pack)
    data, info = await download_pack(server, pack.sha256)
    assert data == pack.data and info.signature == pack.signature
    assert server.fetched == [f"/v1/device/voice-packs/{pack.sha256}/pack"]


async def test_a_download_past_the_announced_size_is_cut_off(pack: SignedPack) -> None:
    server = FakeServer(pack)
    server.body = pack.data + b"\0" * 5000
    with pytest.raises(VoicePackError, match="larger than"):
        await download_pack(server, pack.sha256)


async def test_an_announced_size_over_the_limit_is_refused_before_fetching(
    pack: SignedPack,
) -> None:
    server = FakeServer(pack, size=MAX_PACK_BYTES + 1)
    with pytest.raises(VoicePackError, match="outside"):
        await download_pack(server, pack.sha256)
    assert server.fetched == []


async def test_a_download_cut_short_is_tried_again_later(pack: SignedPack) -> None:
    server = FakeServer(pack)
    server.body = pack.data[:-100]
    with pytest.raises(ServerUnavailable, match=f"{len(pack.data) - 100} of {len(pack.data)}"):
        await download_pack(server, pack.sha256)


async def test_other_bytes_than_the_named_pack_are_refused(
    pack: SignedPack, tmp_path: Path, keys: tuple[Any, str]
) -> None:
    other = signed_pack(keys[0], {"fault": tone(tmp_path / "x.flac", 500)})
    server = FakeServer(pack, size=len(other.data))
    server.body = other.data
    assert pack_sha256(other.data) != pack.sha256
    with pytest.raises(VoicePackError, match="does not hash to"):
        await download_pack(server, pack.sha256)


async def test_an_answer_that_breaks_the_api_is_a_server_fault(pack: SignedPack) -> None:
    server = FakeServer(pack, size="big")
    with pytest.raises(ServerUnavailable, match="answer breaks the API"):
        await download_pack(server, pack.sha256)
