"""The kiosk's copy of its remote voice: the installed pack and the remote settings.

An admin's voice pack (core.voicepack) arrives over the network, but a kiosk must speak the
words it was last given even when it boots without one. So :class:`PackStore` keeps, under
``<state>/voice-packs``:

* ``<sha256>/``: the installed pack, its zip as received (``pack.zip``), its signature and
  its audio files extracted (what :class:`device.acting.clips.ClipLibrary` reads);
* ``current``: the SHA-256 of the pack in use (absent: none);
* ``settings.json``: the remote ``voice.*`` settings last applied (:class:`RemoteVoice`).

A pack is installed only once its signature checks against the release key the kiosk pins
(``[update] release_key``): the server stores and serves packs but cannot make one. Every
file is written under a temporary name, flushed to disk and renamed, so a power cut leaves
the old pack or the new one, never half of one. At start, :meth:`PackStore.current` checks
the zip's hash and signature again and compares each extracted clip with the zip's: a file
damaged on the SD card is dropped (the kiosk then speaks its local words), never played,
and installing the pack again replaces the damaged copy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from core.errors import SettingError
from core.settings import VOICE_KEYS, VolumeWindowValue, check_remote_setting
from core.voicepack import VoicePack, VoicePackError, pack_sha256, read_pack, verify_pack
from device.update.bootguard import fsync_dir

__all__ = ["InstalledPack", "PackStore", "RemoteVoice", "StoredVoice", "pack_store"]

log = logging.getLogger(__name__)

ZIP_NAME: Final = "pack.zip"
SIGNATURE_NAME: Final = "signature"
CURRENT_NAME: Final = "current"
SETTINGS_NAME: Final = "settings.json"


@dataclass(frozen=True)
class InstalledPack:
    """A verified pack on disk: its clip files by key and its prompt texts by key."""

    sha256: str
    name: str
    clips: Mapping[str, Path]
    prompts: Mapping[str, str]

    @property
    def label(self) -> str:
        """How logs and the heartbeat name it: ``night-words@3f2a9c1b04de``."""
        return f"{self.name}@{self.sha256[:12]}"


@dataclass(frozen=True)
class RemoteVoice:
    """The ``voice.*`` settings of the merged fleet < site < device configuration.

    None means the key is not set remotely (the kiosk's own file applies); ``pack`` ""
    means "no pack" set on purpose (the kiosk's own clips and words again).
    """

    pack: str | None = None
    volume_schedule: tuple[VolumeWindowValue, ...] | None = None
    languages: Mapping[str, str] | None = field(default=None)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> tuple[RemoteVoice, dict[str, str]]:
        """The voice settings of a heartbeat's configuration, and the refused ones with why
        (a refused key is left as if unset)."""
        values: dict[str, Any] = {}
        refused: dict[str, str] = {}
        for key in VOICE_KEYS:
            if key in config:
                try:
                    values[key.removeprefix("voice.")] = check_remote_setting(key, config[key])
                except SettingError as exc:
                    refused[key] = str(exc)
        if "languages" in values:
            values["languages"] = MappingProxyType(dict(values["languages"]))
        return cls(**values), refused

    def to_json(self) -> dict[str, Any]:
        """The form ``settings.json`` keeps (the configuration's own spelling)."""
        out: dict[str, Any] = {}
        if self.pack is not None:
            out["voice.pack"] = self.pack
        if self.volume_schedule is not None:
            out["voice.volume_schedule"] = [
                {"start": s, "end": e, "gain_db": g} for s, e, g in self.volume_schedule
            ]
        if self.languages is not None:
            out["voice.languages"] = dict(self.languages)
        return out


class StoredVoice(NamedTuple):
    """The remote voice settings a kiosk last applied, and the pack they name."""

    remote: RemoteVoice
    pack: InstalledPack | None


def pack_store(state: Path) -> PackStore:
    """Where a kiosk with this state directory keeps its voice pack and remote settings."""
    return PackStore(Path(state) / "voice-packs")


class PackStore:
    """Installs verified packs under ``root`` and remembers the remote voice settings."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- packs -------------------------------------------------------------------------------
    def install(self, data: bytes, signature: str, release_key: str) -> InstalledPack:
        """Verify ``data`` (its signature by the pinned release key, then its archive) and
        make it the current pack; VoicePackError says why it is refused, and then nothing
        on disk has changed. A copy of it already on disk is used if it still checks, else
        extracted again; OSError is the disk's (full, read-only, not reading back what was
        written). Blocks on file I/O: call it off the event loop."""
        if not release_key:
            raise VoicePackError(
                "no release key is pinned ([update] release_key): voice packs are refused"
            )
        sha = pack_sha256(data)
        verify_pack(release_key, sha, signature)
        pack = read_pack(data)
        target = self.root / sha
        installed = self._existing(target, sha, release_key)
        if installed is None:
            self._extract(pack, data, signature, target)
            installed = self._read_back(target, sha, release_key)
        self._write(self.root / CURRENT_NAME, sha.encode())
        self._prune(keep=sha)
        log.info("voice pack %s installed (%d clips)", installed.label, len(pack.clips))
        return installed

    def _existing(self, target: Path, sha: str, release_key: str) -> InstalledPack | None:
        """The copy a previous install left at ``target`` if it still checks; a damaged one
        (a cut install, the SD card) is removed so the pack can be extracted again."""
        if not target.exists():
            return None
        try:
            return self._installed(target, sha, release_key)
        except (VoicePackError, OSError) as exc:
            log.warning(
                "voice pack %s: the copy on disk is damaged, extracted again: %s", sha[:12], exc
            )
        _remove(target)  # an OSError here (read-only card) is a disk failure for the caller
        return None

    def _read_back(self, target: Path, sha: str, release_key: str) -> InstalledPack:
        """The copy just written, checked as a start would: bytes that do not read back as
        written are the disk's fault (OSError, so it is tried again later), never the pack's."""
        try:
            return self._installed(target, sha, release_key)
        except VoicePackError as exc:
            _remove(target)
            raise OSError(f"voice pack {sha[:12]} does not read back as written: {exc}") from exc

    def current(self, release_key: str) -> InstalledPack | None:
        """The pack in use, checked again (hash, signature, extracted clips), or None: none
        installed, or the copy on disk no longer checks (logged; the kiosk speaks its local
        words)."""
        try:
            sha = (self.root / CURRENT_NAME).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("voice pack: cannot read %s: %s", self.root / CURRENT_NAME, exc)
            return None
        try:
            if not release_key:
                raise VoicePackError("no release key is pinned ([update] release_key)")
            return self._installed(self.root / sha, sha, release_key)
        except (VoicePackError, OSError) as exc:
            log.error("installed voice pack %s not used: %s", sha[:12], exc)
            return None

    def stored(self, release_key: str) -> StoredVoice:
        """What a start without network speaks with: the saved remote settings and, when
        they name it, the installed pack (checked again); an installed pack other than the
        one they name is not used (logged)."""
        remote = self.load_settings()
        pack = self.current(release_key) if remote.pack else None
        if pack is not None and pack.sha256 != remote.pack:
            # A change cut half way (pack installed, settings not saved, or the reverse):
            # the settings describe another pack's words, so neither pack is spoken.
            log.error(
                "installed voice pack %s not used: the saved remote settings name %s",
                pack.label,
                str(remote.pack)[:12],
            )
            pack = None
        return StoredVoice(remote, pack)

    def clear(self) -> None:
        """No pack in use (the kiosk's own clips and words); the files are removed."""
        (self.root / CURRENT_NAME).unlink(missing_ok=True)
        self._prune(keep=None)

    def _installed(self, directory: Path, sha: str, release_key: str) -> InstalledPack:
        data = (directory / ZIP_NAME).read_bytes()
        if pack_sha256(data) != sha:
            raise VoicePackError(f"{directory / ZIP_NAME} does not hash to {sha[:12]}")
        verify_pack(release_key, sha, (directory / SIGNATURE_NAME).read_text().strip())
        pack = read_pack(data)
        manifest = pack.manifest
        clips = {key: directory / member for key, member in manifest.clips.items()}
        missing = [str(p) for p in clips.values() if not p.is_file()]
        if missing:
            raise VoicePackError(f"extracted files missing: {', '.join(missing)}")
        changed = [str(p) for key, p in clips.items() if p.read_bytes() != pack.clips[key]]
        if changed:
            raise VoicePackError(f"extracted files differ from the pack: {', '.join(changed)}")
        return InstalledPack(
            sha, manifest.name, MappingProxyType(clips), MappingProxyType(dict(manifest.prompts))
        )

    def _extract(self, pack: VoicePack, data: bytes, signature: str, target: Path) -> None:
        """The pack's files (``pack`` is ``data`` as read) in a temporary directory,
        flushed, renamed to ``target``."""
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        try:
            tmp.mkdir(parents=True)
            _write_synced(tmp / ZIP_NAME, data)
            _write_synced(tmp / SIGNATURE_NAME, signature.encode())
            for key, member in pack.manifest.clips.items():
                _write_synced(tmp / member, pack.clips[key])
            fsync_dir(tmp)
            os.replace(tmp, target)
            fsync_dir(self.root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _prune(self, keep: str | None) -> None:
        """Remove every pack directory but ``keep`` (and leftovers of a cut install)."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.name != keep:
                shutil.rmtree(entry, ignore_errors=True)

    # -- settings ----------------------------------------------------------------------------
    def save_settings(self, remote: RemoteVoice) -> None:
        """Remember the remote settings for a start without network."""
        text = json.dumps(remote.to_json(), ensure_ascii=False, sort_keys=True)
        self._write(self.root / SETTINGS_NAME, text.encode())

    def load_settings(self) -> RemoteVoice:
        """The remote settings last saved (none: all unset); a damaged file is logged and
        read as unset."""
        path = self.root / SETTINGS_NAME
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return RemoteVoice()
        except (OSError, ValueError) as exc:
            log.error("remote voice settings %s not read: %s", path, exc)
            return RemoteVoice()
        if not isinstance(document, dict):
            log.error("remote voice settings %s: not an object", path)
            return RemoteVoice()
        remote, refused = RemoteVoice.from_config(document)
        if refused:
            log.error("remote voice settings %s: ignored %s", path, refused)
        return remote

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            _write_synced(tmp, data)
            os.replace(tmp, path)
            fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    """``path`` gone, a directory or a file; OSError when the disk refuses."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
