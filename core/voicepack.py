"""Voice packs: the words and recorded clips an admin sends to kiosks (docs/voice.md).

A pack is one zip: ``pack.json`` (its name, clip files by key, prompt texts by key) and the
audio files it names. The admin signs the zip's SHA-256 with the fleet's offline *release
key*, the same key kiosks already pin for releases, under its own purpose tag so that a
pack signature can never pass as a release signature or the reverse. The server stores and
serves packs but cannot make one: a compromised server can hold back a pack, never forge
one (an outcome with pack words or a recording is spoken from the pack whatever prompt text
a verify answer carries).

The limits below are checked by everyone who reads a pack (the admin's build, the server's
upload, the kiosk's download) before anything is decoded: a pack is a few clips of at most
2.5 s, so a large or deeply compressed archive is a mistake or an attack.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.errors import SettingError
from core.outcomes import ALL_OUTCOMES

PACK_TAG: Final = "siheyi-voice-pack-v1"
MANIFEST: Final = "pack.json"
FORMAT: Final = 1
#: A whole pack: 20 FLAC clips of 2.5 s are about 2 MB.
MAX_PACK_BYTES: Final = 8 * 1024 * 1024
#: One member once decompressed (a 2.5 s 48 kHz 16-bit stereo WAV is 480 KB).
MAX_MEMBER_BYTES: Final = 2 * 1024 * 1024
MAX_MEMBERS: Final = 64
MAX_PROMPT_CHARS: Final = 200
#: Clips or prompts in one manifest: every outcome in a few languages is a few dozen keys.
MAX_KEYS: Final = 64
#: A clip or prompt key: an outcome, or an outcome and a language (``pass``, ``pass.en``).
KEY_PATTERN: Final = r"^(" + "|".join(sorted(ALL_OUTCOMES)) + r")(\.[a-z]{2,3})?$"
#: Audio file names inside a pack: flat, no path, a known audio extension.
MEMBER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\.(wav|flac|ogg)$"
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_KEY = re.compile(KEY_PATTERN)
_MEMBER = re.compile(MEMBER_PATTERN)
_NAME = re.compile(NAME_PATTERN)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SIGNATURE = re.compile(r"[0-9a-f]{128}")
#: Stored or deflated members only: what :func:`build_pack` writes, and nothing that needs
#: another decompressor (whose errors zipfile does not wrap) or a password.
_METHODS: Final = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_ENCRYPTED: Final = 0x1
#: Fixed member time, so that the same files always build the same bytes (and hash).
_ZIP_TIME: Final = (2020, 1, 1, 0, 0, 0)


class VoicePackError(SettingError):
    """A pack, or its signature, is not acceptable; the message says why."""


@dataclass(frozen=True)
class Manifest:
    """What ``pack.json`` says: clip file per key, prompt text per key."""

    name: str
    clips: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    prompts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class VoicePack:
    """A read and checked pack: its manifest, its SHA-256 and the clip bytes by key."""

    manifest: Manifest
    sha256: str
    clips: Mapping[str, bytes]


def pack_message(sha256_hex: str) -> bytes:
    """The exact bytes the release key signs for a pack."""
    check_sha256(sha256_hex)
    return f"{PACK_TAG}\n{sha256_hex}".encode()


def check_sha256(value: object) -> str:
    """A pack reference (its SHA-256, 64 lower-case hex digits), or VoicePackError."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise VoicePackError(f"a voice pack is named by its SHA-256 (64 hex digits), got {value!r}")
    return value


def sign_pack(key: Ed25519PrivateKey, sha256_hex: str) -> str:
    """The signature (hex) the admin attaches to a pack."""
    return key.sign(pack_message(sha256_hex)).hex()


def verify_pack(public_key_hex: str, sha256_hex: str, signature_hex: str) -> None:
    """Raise VoicePackError unless the signature is the release key's over this pack."""
    if not _HEX64.fullmatch(public_key_hex):
        raise VoicePackError("the pinned release key is not 64 hex digits")
    if not _SIGNATURE.fullmatch(signature_hex):
        raise VoicePackError("a pack signature is 128 hex digits")
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        key.verify(bytes.fromhex(signature_hex), pack_message(sha256_hex))
    except (InvalidSignature, ValueError) as exc:
        raise VoicePackError(
            f"voice pack {sha256_hex[:12]} is not signed by the pinned release key"
        ) from exc


def pack_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_pack(name: str, clips: Mapping[str, Path], prompts: Mapping[str, str]) -> bytes:
    """The pack's bytes: the same inputs always give the same bytes, so the same hash.

    Each clip file keeps its extension and is stored as ``<key>.<ext>``; the result is read
    back through :func:`read_pack`, so a pack this builds is one every kiosk accepts.
    """
    members: dict[str, bytes] = {}
    files: dict[str, str] = {}
    for key, path in sorted(clips.items()):
        member = f"{key}{path.suffix.lower()}"
        data = path.read_bytes()
        if len(data) > MAX_MEMBER_BYTES:
            raise VoicePackError(f"{path}: {len(data)} bytes, a clip may have {MAX_MEMBER_BYTES}")
        members[member], files[key] = data, member
    document = {"format": FORMAT, "name": name, "clips": files, "prompts": dict(prompts)}
    manifest = json.dumps(document, ensure_ascii=False, sort_keys=True, indent=1).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in [(MANIFEST, manifest), *sorted(members.items())]:
            info = zipfile.ZipInfo(member, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED  # a ZipInfo's own default is stored
            archive.writestr(info, data)
    data = out.getvalue()
    read_pack(data)
    return data


def read_pack(data: bytes) -> VoicePack:
    """Check a pack's archive and manifest (not its signature, not the audio itself)."""
    if len(data) > MAX_PACK_BYTES:
        raise VoicePackError(f"voice pack: {len(data)} bytes, at most {MAX_PACK_BYTES}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = _checked_members(archive)
            manifest = _manifest(_read(archive, infos[MANIFEST]))
            members = {
                m: _read(archive, infos[_member(infos, m)]) for m in set(manifest.clips.values())
            }
            clips = {key: members[m] for key, m in manifest.clips.items()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as exc:
        raise VoicePackError(f"voice pack: not a readable zip ({exc})") from exc
    return VoicePack(manifest, pack_sha256(data), MappingProxyType(clips))


def _checked_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise VoicePackError(f"voice pack: {len(infos)} files, at most {MAX_MEMBERS}")
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info.filename != MANIFEST and not _MEMBER.fullmatch(info.filename):
            raise VoicePackError(f"voice pack: file name {info.filename!r} is not allowed")
        if info.compress_type not in _METHODS or info.flag_bits & _ENCRYPTED:
            raise VoicePackError(f"voice pack: {info.filename} is encrypted or not deflated")
        if info.file_size > MAX_MEMBER_BYTES:
            raise VoicePackError(f"voice pack: {info.filename} is larger than {MAX_MEMBER_BYTES}")
        if info.filename in by_name:
            raise VoicePackError(f"voice pack: {info.filename} appears twice")
        by_name[info.filename] = info
    if MANIFEST not in by_name:
        raise VoicePackError(f"voice pack: no {MANIFEST}")
    return by_name


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The member's bytes, never more than its limit (a header may lie about its size)."""
    with archive.open(info) as member:
        data = member.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        raise VoicePackError(f"voice pack: {info.filename} is larger than {MAX_MEMBER_BYTES}")
    return data


def _member(infos: Mapping[str, zipfile.ZipInfo], name: str) -> str:
    if name not in infos or name == MANIFEST:
        raise VoicePackError(f"voice pack: {MANIFEST} names {name!r}, which is not in the pack")
    return name


def _manifest(raw: bytes) -> Manifest:
    try:
        document: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise VoicePackError(f"voice pack: {MANIFEST} is not JSON ({type(exc).__name__})") from exc
    if not isinstance(document, dict):
        raise VoicePackError(f"voice pack: {MANIFEST} must be an object")
    if type(document.get("format")) is not int or document.get("format") != FORMAT:
        raise VoicePackError(f"voice pack: format {document.get('format')!r}, expected {FORMAT}")
    name = document.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise VoicePackError(f"voice pack: name {name!r}: letters, digits, '_', '.', '-'")
    clips = _keyed(document.get("clips", {}), "clips", _MEMBER, "a file name in the pack")
    prompts = _keyed(
        document.get("prompts", {}), "prompts", None, f"a text of 1-{MAX_PROMPT_CHARS} characters"
    )
    return Manifest(name, MappingProxyType(clips), MappingProxyType(prompts))


def _keyed(value: object, what: str, pattern: re.Pattern[str] | None, kind: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise VoicePackError(f"voice pack: {what} must be an object")
    if len(value) > MAX_KEYS:
        raise VoicePackError(f"voice pack: {len(value)} {what}, at most {MAX_KEYS}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise VoicePackError(f"voice pack: {what} key {key!r} is not an outcome[.language]")
        ok = isinstance(item, str) and (
            pattern.fullmatch(item) if pattern else 0 < len(item.strip()) <= MAX_PROMPT_CHARS
        )
        if not ok:
            raise VoicePackError(f"voice pack: {what}[{key}] must be {kind}, got {item!r}")
        out[key] = str(item)
    return out
