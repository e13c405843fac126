"""The release and rollout admin API as an HTTP client, and the release key's files.

``provisioning`` reaches the server only through its API, so answers are decoded as plain
JSON here (their models are core/wire_releases.py; the CLI tests run against the real
server, which keeps the two in step). Logging in works as for ``kiosk provision
--server-url``: an admin's token kept per server URL, 0600 (:class:`RemoteFleet`).
"""

from __future__ import annotations

import base64
import json
import os
import zipfile
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.errors import SettingError
from core.releases import (
    ReleaseError,
    check_filename,
    check_version,
    file_sha256,
    sign_release,
    wheel_metadata_version,
)
from provisioning.errors import (
    InvalidField,
    LoginFailed,
    ProvisioningError,
    Refused,
    StoreError,
)
from provisioning.remote import RemoteFleet


class NotFound(ProvisioningError, LookupError):
    """No such release, rollout, site or device."""


class ReleaseApi(RemoteFleet):
    """``/v1/admin/releases`` and ``/v1/admin/rollouts`` as an admin."""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request with the admin's token (one new login if it is refused); the JSON
        answer, or the server's refusal as a :class:`ProvisioningError`."""
        answer: type[Any] = object  # plain JSON: msgspec decodes ``object`` as any value
        return self._call(method, path, cast(Any, body), answer)

    def _problem(self, status: int, raw: bytes, retry: str, path: str) -> ProvisioningError:
        try:
            detail = str(json.loads(raw)["detail"])
        except (ValueError, TypeError, KeyError):
            detail = raw[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
        if status == 404:
            return NotFound(detail)
        if status == 409:
            return Refused(detail)
        if status == 401:
            return LoginFailed(f"{self.url}: the admin login was refused again: {detail}")
        return super()._problem(status, raw, retry, path)


# -- the release key ----------------------------------------------------------------------


def write_key(path: Path) -> str:
    """A new release key in ``path`` (PEM, created 0600, never over an existing file: a lost
    release key means re-pinning every kiosk); its public half as hex."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise Refused(f"{path} exists: a release key is never overwritten") from exc
    except OSError as exc:
        raise StoreError(f"{path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    return key.public_key().public_bytes_raw().hex()


def read_key(path: Path) -> Ed25519PrivateKey:
    """The release key of ``path`` (PEM as ``keygen`` writes it)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"{path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidField(f"{path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidField(f"{path}: not an Ed25519 key")
    return key


# -- wheels ---------------------------------------------------------------------------------


def wheel_version(path: Path) -> str:
    """The ``Version:`` of the wheel's ``*.dist-info/METADATA``."""
    try:
        with zipfile.ZipFile(path) as wheel:
            return wheel_metadata_version(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InvalidField(f"{path}: not a wheel with a METADATA file ({exc})") from exc
    except ReleaseError as exc:
        raise InvalidField(f"{path}: {exc}") from exc


def release_version(path: Path, given: str | None) -> str:
    """The wheel's METADATA version; ``--version``, when given, must be that very string.

    A kiosk reports the version it runs from its installed METADATA and is offered a release
    until it reports running it: a release published as ``2.0.0+pi`` from a ``2.0.0`` wheel
    would have kiosks switch to it, report ``2.0.0`` and be offered it again, for ever."""
    inside = wheel_version(path)
    if given is not None and given != inside:
        raise InvalidField(
            f"--version {given!r}: the wheel's METADATA says {inside!r}, and kiosks report"
            " that; build the wheel with the version you mean (or leave --version out)"
        )
    return inside


def signed_upload(path: Path, key: Ed25519PrivateKey, version: str | None) -> dict[str, Any]:
    """The ``POST /v1/admin/releases`` body: the wheel, its facts and the key's signature."""
    version = release_version(path, version)
    try:
        check_version(version)
        check_filename(path.name)
        data = path.read_bytes()
    except SettingError as exc:
        raise InvalidField(str(exc)) from exc
    except OSError as exc:
        raise StoreError(f"{path}: {exc.strerror or exc}") from exc
    sha256 = file_sha256(path)
    return {
        "version": version,
        "filename": path.name,
        "sha256": sha256,
        "signature": sign_release(key, version, path.name, sha256),
        "size": len(data),
        "wheel": base64.b64encode(data).decode("ascii"),
    }
