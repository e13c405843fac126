"""The kiosk's own Ed25519 key: signing challenges, enrolment, and key rotation on disk.

The private key lives in the device bundle (mode 0600) and never leaves the kiosk: the server
only ever receives the public key and signatures. Rotation is crash-safe: the new key is first
written next to the bundle (``<bundle>.next-key``), then registered with the server, then
written into the bundle; a kiosk that died in between still holds both keys and
:meth:`DeviceIdentity.promote_pending` recovers (docs/identity.md). Keys are kept out of every
``repr`` and log line.

The messages it signs are :mod:`core.signing`'s, the same bytes the server checks.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.bundle import bundle_text

log = logging.getLogger(__name__)

PENDING_SUFFIX = ".next-key"


def new_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 key from the OS random source."""
    return Ed25519PrivateKey.generate()


def public_hex(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte public key as lower-case hex (what the server stores)."""
    return key.public_key().public_bytes_raw().hex()


def private_hex(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte private key as hex: only ever written to a 0600 file."""
    return key.private_bytes_raw().hex()


def load_private_hex(value: str) -> Ed25519PrivateKey:
    """Parse a raw private key written by :func:`private_hex`; ValueError when malformed."""
    raw = bytes.fromhex(value)
    if len(raw) != 32:
        raise ValueError("an Ed25519 private key is 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(raw)


def write_private_file(path: Path, text: str, *, durable: bool = True) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (0600), atomically."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class DeviceIdentity:
    """One kiosk's device id and private key, optionally bound to its bundle file on disk."""

    def __init__(
        self,
        device_id: str,
        key: Ed25519PrivateKey,
        *,
        bundle_path: Path | None = None,
        pending: Ed25519PrivateKey | None = None,
    ) -> None:
        self.device_id = device_id
        self._key = key
        self._pending = pending
        self.bundle_path = bundle_path

    def __repr__(self) -> str:
        return f"DeviceIdentity({self.device_id!r}, public_key={self.public_key_hex[:16]}…)"

    @classmethod
    def from_bundle(cls, device_id: str, private_key_hex: str, path: Path | None) -> DeviceIdentity:
        """The identity of a loaded bundle; a pending rotation key next to it is picked up."""
        pending = None
        if path is not None:
            pending_file = path.with_name(path.name + PENDING_SUFFIX)
            try:
                pending = load_private_hex(pending_file.read_text(encoding="utf-8").strip())
            except FileNotFoundError:
                pending = None
            except (OSError, ValueError):
                log.warning("ignoring unreadable pending key file next to %s", path)
        return cls(device_id, load_private_hex(private_key_hex), bundle_path=path, pending=pending)

    @property
    def public_key_hex(self) -> str:
        """The current public key (hex)."""
        return public_hex(self._key)

    @property
    def has_pending(self) -> bool:
        """A rotation was started and not yet confirmed by the server."""
        return self._pending is not None

    @property
    def pending_public_key_hex(self) -> str:
        """The public half of the pending rotation key ('' without one)."""
        return public_hex(self._pending) if self._pending is not None else ""

    def sign(self, message: bytes) -> str:
        """Sign with the current key; hex."""
        return self._key.sign(message).hex()

    def sign_pending(self, message: bytes) -> str:
        """Sign with the pending rotation key; hex."""
        if self._pending is None:
            raise RuntimeError("no pending key")
        return self._pending.sign(message).hex()

    def begin_rotation(self) -> str:
        """Create (or reuse) the next key, saved next to the bundle before anyone sees it."""
        if self._pending is None:
            self._pending = new_key()
            if self.bundle_path is not None:
                write_private_file(
                    self._pending_file(), private_hex(self._pending) + "\n", durable=True
                )
        return public_hex(self._pending)

    def commit_rotation(self) -> None:
        """The server accepted the pending key: make it the current one, in the bundle too."""
        if self._pending is None:
            return
        self._key, self._pending = self._pending, None
        if self.bundle_path is not None:
            data = json.loads(self.bundle_path.read_text(encoding="utf-8"))
            data["private_key"] = private_hex(self._key)
            data["public_key"] = public_hex(self._key)
            write_private_file(self.bundle_path, bundle_text(data), durable=True)
            self._pending_file().unlink(missing_ok=True)
        log.info("device %s now uses key %s…", self.device_id, self.public_key_hex[:16])

    def promote_pending(self) -> bool:
        """The server refused the current key: a rotation may have completed before a crash.

        Switch to the pending key if there is one (and record it in the bundle); True then.
        """
        if self._pending is None:
            return False
        self.commit_rotation()
        return True

    def _pending_file(self) -> Path:
        assert self.bundle_path is not None
        return self.bundle_path.with_name(self.bundle_path.name + PENDING_SUFFIX)
