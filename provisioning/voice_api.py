"""Voice packs on the admin's machine: building one from clip files, signing it, and the
voice pack admin API as an HTTP client (docs/voice-packs.md).

A pack is checked here with the very function the server and the kiosks check it with
(:func:`core.voicepack.read_pack`), so a pack this accepts is never refused for its form
further on; only the audio itself is judged by the kiosk, which plays synthesis instead of a
clip it cannot use. Logging in works as for ``kiosk release`` (:class:`RemoteFleet`).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.outcomes import ALL_OUTCOMES
from core.voicepack import (
    KEY_PATTERN,
    MAX_MEMBER_BYTES,
    MAX_PACK_BYTES,
    VoicePack,
    VoicePackError,
    build_pack,
    read_pack,
    sign_pack,
)
from core.wire_admin import ConfigLayers, ConfigSetRequest, Scope
from core.wire_voice import VoicePackList, VoicePackPublished, VoicePackUpload
from provisioning.errors import InvalidField, StoreError
from provisioning.release_api import ReleaseApi

#: The configuration key that gives kiosks a pack (fleet < site < device).
PACK_KEY = "voice.pack"
#: Audio a pack may carry, by file extension (core.voicepack.MEMBER_PATTERN).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
_KEY = re.compile(KEY_PATTERN)


class VoicePackApi(ReleaseApi):
    """``/v1/admin/voice-packs`` and the layered configuration, as an admin.

    A :class:`ReleaseApi` for its refusals (404 is "no such …", 409 a refusal), with the
    voice pack bodies of :mod:`core.wire_voice` decoded as such."""

    def publish(self, upload: VoicePackUpload) -> VoicePackPublished:
        return self._call("POST", "/v1/admin/voice-packs", upload, VoicePackPublished)

    def packs(self) -> VoicePackList:
        return self._call("GET", "/v1/admin/voice-packs", None, VoicePackList)

    def use(self, sha256: str, scope: Scope, target: str) -> int:
        """Give the kiosks of a layer this pack ("" = none); the new config version."""
        request = ConfigSetRequest(scope=scope, target=target, key=PACK_KEY, value=sha256)
        return self.set_config(request).config_version

    def users(self) -> dict[str, list[str]]:
        """Pack SHA-256 → the layers that name it (``fleet``, ``site S``, ``device ID``)."""
        return pack_users(self.config())


def pack_users(layers: ConfigLayers) -> dict[str, list[str]]:
    """Where each pack is in use, from every layer's ``voice.pack``."""
    out: dict[str, list[str]] = {}
    for layer in layers.layers:
        if layer.key == PACK_KEY and isinstance(layer.value, str):
            where = "fleet" if layer.scope == "fleet" else f"{layer.scope} {layer.target}"
            out.setdefault(layer.value, []).append(where)
    return out


# -- building -------------------------------------------------------------------------------


def pairs(items: Iterable[str], option: str) -> dict[str, str]:
    """``KEY=VALUE`` words (``--clip pass=pass.wav``) as a dict; a key given twice is refused
    (two clips for one outcome is a mistake, not a choice)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value:
            raise InvalidField(f"{option} {item!r}: expected KEY=VALUE, e.g. pass=pass.wav")
        if key in out:
            raise InvalidField(f"{option} {key}: given twice")
        out[key] = value
    return out


def clips_in(folder: Path) -> dict[str, Path]:
    """The audio files of ``folder``, by key: ``pass.wav`` is ``pass``, ``pass.en.flac`` is
    ``pass.en``. Other files (a README, the session's notes) are left out; two recordings of
    one key are refused, since which one was meant cannot be guessed."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise StoreError(f"--from-dir {folder}: {exc.strerror or exc}") from exc
    out: dict[str, Path] = {}
    for path in entries:
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
            continue
        key = path.name[: -len(path.suffix)]
        if key in out:
            raise InvalidField(
                f"--from-dir {folder}: {out[key].name} and {path.name} are both {key}"
            )
        out[key] = path
    return out


def check_clip(key: str, path: Path) -> None:
    """What can be said of a clip file before it is read: it exists and is small enough,
    and it is a WAV, FLAC or OGG (the kiosk judges the audio)."""
    if not _KEY.fullmatch(key):
        raise InvalidField(
            f"clip {key} ({path.name}): the key is an outcome ({', '.join(sorted(ALL_OUTCOMES))})"
            " or an outcome and a language (pass.en)"
        )
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise InvalidField(f"clip {key}: {path.name}: a .wav, .flac or .ogg file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise StoreError(f"clip {key}: {path}: {exc.strerror or exc}") from exc
    if size > MAX_MEMBER_BYTES:
        raise InvalidField(
            f"clip {key}: {path}: {size} bytes, at most {MAX_MEMBER_BYTES} (a clip plays"
            " at most 2.5 s: record it shorter, or as FLAC)"
        )


def build(name: str, clips: Mapping[str, Path], prompts: Mapping[str, str]) -> bytes:
    """The pack's bytes (deterministic: the same files and words, the same SHA-256)."""
    for key, path in sorted(clips.items()):
        check_clip(key, path)
    try:
        return build_pack(name, clips, prompts)
    except VoicePackError as exc:
        raise InvalidField(str(exc).removeprefix("voice pack: ")) from exc
    except OSError as exc:
        raise StoreError(f"{exc.filename or name}: {exc.strerror or exc}") from exc


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` as ``path``, never half written (a copied half pack would be refused
    everywhere, with a hash nobody recognises)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{path}: {exc.strerror or exc}") from exc


# -- publishing -----------------------------------------------------------------------------


def read_pack_file(path: Path) -> tuple[bytes, VoicePack]:
    """A built pack's bytes and what they hold, checked as the server checks them."""
    try:
        size = path.stat().st_size
        if size > MAX_PACK_BYTES:  # not read: a wrong file given by mistake may be huge
            raise InvalidField(f"{path}: {size} bytes, a voice pack has at most {MAX_PACK_BYTES}")
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"{path}: {exc.strerror or exc}") from exc
    try:
        return data, read_pack(data)
    except VoicePackError as exc:
        raise InvalidField(f"{path}: {exc}") from exc


def signed_upload(data: bytes, sha256: str, key: Ed25519PrivateKey) -> VoicePackUpload:
    """The ``POST /v1/admin/voice-packs`` body: the pack and the release key's signature."""
    return VoicePackUpload(sha256, sign_pack(key, sha256), len(data), data)
