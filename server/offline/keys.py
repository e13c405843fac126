"""Per-site pseudonym keys and the server's Ed25519 signing key, all created on first use.

Each site has its own pseudonym key (32 random bytes, hex, table ``site_keys``): it keys
``HMAC-SHA256(site key, ID number)`` pseudonyms on that site's kiosks (the bundle field
``fleet_key``, name kept for compatibility), in that site's snapshots and in passes bound to
that site. A kiosk therefore only ever holds its own site's key: a stolen kiosk reveals only
its own site's pseudonyms (docs/identity.md). The snapshot signing key (table ``server_keys``, name
``snapshot``) signs site snapshots; only its public half ever leaves the server (in device
bundles). Neither key is logged; :class:`SigningKey` hides its private half from ``repr``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from server.storage.connection import Connection

SNAPSHOT_KEY = "snapshot"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def site_key(conn: Connection, site: str) -> str:
    """Return ``site``'s pseudonym key (32 random bytes, hex), creating it on first use.

    Safe against a concurrent first use by another process: the first stored key wins. An
    empty site has no key (``ValueError``): every pseudonym belongs to exactly one site.
    """
    if not site:
        raise ValueError("a pseudonym key belongs to a site; the site is empty")
    conn.execute(
        "INSERT INTO site_keys (site, key_hex, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (site) DO NOTHING",
        (site, secrets.token_hex(32), _now()),
    )
    row = conn.execute("SELECT key_hex FROM site_keys WHERE site = ?", (site,)).fetchone()
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


def signing_key(conn: Connection, name: str = SNAPSHOT_KEY) -> SigningKey:
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


def server_public_key(conn: Connection) -> str:
    """The snapshot key's raw public key as hex (created on first use)."""
    return signing_key(conn).public_hex
