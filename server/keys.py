"""The fleet's pseudonym key and the server's Ed25519 signing key, both created on first use.

The fleet key (32 random bytes, hex, table ``fleet``) keys ``HMAC-SHA256(fleet_key, ID
number)`` pseudonyms on every kiosk. The snapshot signing key (table ``server_keys``, name
``snapshot``) signs site snapshots; only its public half ever leaves the server (in device
bundles). Neither key is logged; :class:`SigningKey` hides its private half from ``repr``.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SNAPSHOT_KEY = "snapshot"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def fleet_key(conn: sqlite3.Connection) -> str:
    """Return the fleet's pseudonym key (32 random bytes, hex), creating it on first use."""
    conn.execute(
        "INSERT INTO fleet (id, fleet_key, created_at) VALUES (1, ?, ?)"
        " ON CONFLICT (id) DO NOTHING",
        (secrets.token_hex(32), _now()),
    )
    row = conn.execute("SELECT fleet_key FROM fleet WHERE id = 1").fetchone()
    return str(row[0])


def key_id(public_raw: bytes) -> str:
    """The hex of the first 8 bytes of SHA-256 of a raw public key."""
    return hashlib.sha256(public_raw).digest()[:8].hex()


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key pair of the server; the private half stays out of ``repr``."""

    private: Ed25519PrivateKey = field(repr=False)
    public_raw: bytes

    @property
    def public_hex(self) -> str:
        """The raw 32-byte public key as hex (what device bundles carry)."""
        return self.public_raw.hex()

    @property
    def key_id(self) -> str:
        """:func:`key_id` of the public key."""
        return key_id(self.public_raw)

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature (64 bytes) over ``data``."""
        return self.private.sign(data)


def _raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def signing_key(conn: sqlite3.Connection, name: str = SNAPSHOT_KEY) -> SigningKey:
    """Return the server's key ``name``, generating and storing it on first use.

    Safe against a concurrent first use by another process: the first stored key wins.
    """
    private = Ed25519PrivateKey.generate()
    conn.execute(
        "INSERT INTO server_keys (name, private_key, public_key, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        (name, private.private_bytes_raw().hex(), _raw_public(private.public_key()).hex(), _now()),
    )
    row = conn.execute("SELECT private_key FROM server_keys WHERE name = ?", (name,)).fetchone()
    stored = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(row[0]))
    return SigningKey(stored, _raw_public(stored.public_key()))


def server_public_key(conn: sqlite3.Connection) -> str:
    """The snapshot key's raw public key as hex (created on first use)."""
    return signing_key(conn).public_hex
