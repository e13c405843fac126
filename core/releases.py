"""What a release signature covers, and checking it (docs/updates.md).

A release is one wheel. The admin signs it with the fleet's Ed25519 *release key*, kept
offline; every kiosk pins the public half in ``kiosk.toml`` and installs nothing whose
signature does not check. The signature covers a purpose tag, the version, the file name
and the wheel's SHA-256, so a signature can neither be moved to another wheel nor replayed
as another kind of signed message. The server stores and serves releases but holds no
key that could make one: a compromised server can withhold updates, never forge one.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from email.parser import HeaderParser
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from core.errors import SettingError

RELEASE_TAG = "siheyi-release-v1"
#: A release version: PEP 440-ish text that is also safe as a directory name.
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
#: A wheel file name (the distribution, version and tags, ``.whl``), safe as a path part.
WHEEL_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,190}\.whl")
_KEY_HEX = re.compile(r"[0-9a-f]{64}")
#: METADATA is a few KB; more is no wheel pip made (and would cost memory to read).
MAX_METADATA_BYTES = 1024 * 1024


class ReleaseError(SettingError):
    """A release or its signature is not acceptable; the message says why."""


def release_message(version: str, filename: str, sha256_hex: str) -> bytes:
    """The exact bytes the release key signs."""
    check_version(version)
    check_filename(filename)
    return f"{RELEASE_TAG}\n{version}\n{filename}\n{sha256_hex}".encode()


def check_version(version: str) -> str:
    if not VERSION.fullmatch(version) or version in {".", ".."}:
        raise ReleaseError(f"release version {version!r} is not a plain version string")
    return version


def check_filename(filename: str) -> str:
    if not WHEEL_NAME.fullmatch(filename) or filename.startswith("."):
        raise ReleaseError(f"release file {filename!r} is not a wheel file name")
    return filename


def file_sha256(path: Path) -> str:
    """The file's SHA-256, read in chunks (wheels are a few MB; a Pi has little memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sign_release(key: Ed25519PrivateKey, version: str, filename: str, sha256_hex: str) -> str:
    """The signature (hex) an admin's ``kiosk release publish`` attaches."""
    return key.sign(release_message(version, filename, sha256_hex)).hex()


def verify_release(
    public_key_hex: str, version: str, filename: str, sha256_hex: str, signature_hex: str
) -> None:
    """Raise :class:`ReleaseError` unless the signature is the release key's over these."""
    if not _KEY_HEX.fullmatch(public_key_hex):
        raise ReleaseError("the pinned release key is not 64 hex digits")
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        key.verify(bytes.fromhex(signature_hex), release_message(version, filename, sha256_hex))
    except (InvalidSignature, ValueError) as exc:
        raise ReleaseError(
            f"release {version} ({filename}) is not signed by the pinned release key"
        ) from exc


def wheel_metadata_version(archive: zipfile.ZipFile) -> str:
    """The ``Version:`` of the wheel's one top-level ``*.dist-info/METADATA``: the version a
    kiosk reports once it runs the release (so the one a release must be published as)."""
    found = [
        info
        for info in archive.infolist()
        if info.filename.count("/") == 1 and info.filename.endswith(".dist-info/METADATA")
    ]
    if len(found) != 1:
        raise ReleaseError(f"wheel: {len(found)} *.dist-info/METADATA files, a wheel has one")
    if found[0].file_size > MAX_METADATA_BYTES:
        raise ReleaseError("wheel: METADATA is too large")
    try:
        text = archive.read(found[0]).decode("utf-8")
    except (zipfile.BadZipFile, UnicodeDecodeError, OSError, EOFError) as exc:
        raise ReleaseError(f"wheel: unreadable METADATA ({exc})") from exc
    version = HeaderParser().parsestr(text).get("Version")
    if not version or not str(version).strip():
        raise ReleaseError("wheel: METADATA has no Version")
    return str(version).strip()
