"""Signed offline passes: a short-lived, Ed25519-signed QR a kiosk checks without the server.

Format (docs/passes.md)::

    SHY1.<base64url(payload JSON, no padding)>.<base64url(signature, no padding)>

The payload is compact JSON with sorted keys
``{"exp","iat","m","n","o","pid","s","v"}``; the signature is Ed25519 by the server key
(``server_keys`` name ``snapshot``, the ``server_key`` of every device bundle) over the exact
ASCII bytes ``"SHY1." + payload_b64``. A pass is only issued when the person's current
four-in-one decision is ``pass``, and for at most :data:`MAX_VALIDITY_S`.

The format, signing and the kiosk's check are :mod:`core.passes`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from core import idnumbers as identity
from core.passes import MAX_SITE_LEN, MAX_VALIDITY_S, VERSION, sign_pass
from server.config import ServerConfig
from server.errors import PassRefused
from server.offline.keys import SigningKey, signing_key, site_key
from server.storage.connection import Connection
from server.storage.db import Database, open_database
from server.verify.resilience import ResilientSource
from server.verify.service import Verification, Verifier
from server.verify.upstream import configured_sources


@dataclass(frozen=True)
class IssuedPass:
    """A pass and what it says (for the command's summary line)."""

    text: str
    payload: dict[str, Any]


def make_pass(
    key: SigningKey,
    site_key_hex: str,
    id_number: str,
    *,
    outcome: str,
    now: float,
    validity_s: int,
    site: str,
    nonce: str | None = None,
) -> IssuedPass:
    """Build and sign a pass for ``id_number`` bound to ``site`` (no policy check: see
    :func:`issue_pass`). ``site_key_hex`` is ``site``'s pseudonym key: the pass's ``pid`` is
    the pseudonym the kiosks of that site compute, and no other."""
    if not 0 < validity_s <= MAX_VALIDITY_S:
        raise ValueError(f"validity must be 1..{MAX_VALIDITY_S} s, got {validity_s}")
    if not site:
        raise ValueError("a pass is bound to a site (its pseudonym is under that site's key)")
    if len(site) > MAX_SITE_LEN or any(ord(c) < 32 for c in site):
        raise ValueError(f"site must be at most {MAX_SITE_LEN} printable characters")
    number = identity.normalise(id_number)
    iat = int(now)
    payload: dict[str, Any] = {
        "v": VERSION,
        "pid": identity.pseudonym(bytes.fromhex(site_key_hex), number),
        "m": identity.mask(number),
        "o": outcome,
        "iat": iat,
        "exp": iat + validity_s,
        "n": nonce if nonce is not None else secrets.token_hex(8),
        "s": site,
    }
    return IssuedPass(sign_pass(payload, key.sign), payload)


def known_site_key(conn: Connection, site: str) -> str:
    """``site``'s pseudonym key; ``ValueError`` for a site the fleet does not have (a typo
    would otherwise mint a key no kiosk holds, and a pass no kiosk could use)."""
    if conn.execute("SELECT 1 FROM sites WHERE site = ?", (site,)).fetchone() is None:
        raise ValueError(f"unknown site {site!r} (no kiosk is registered there)")
    return site_key(conn, site)


async def current_decision(
    config: ServerConfig, db: Database, id_number: str, *, site: str, now: datetime
) -> Verification:
    """The four-in-one decision for ``id_number`` now, through the configured sources
    (local tables or HTTP upstreams, each with its timeout), under ``site``'s policy."""
    async with aiohttp.ClientSession() as session:
        adapters = configured_sources(config, db, session)
        sources = [
            ResilientSource(a, timeout_s=config.timeout_for(a.name), max_entries=0)
            for a in adapters
        ]
        verifier = Verifier(sources, max_stale_s=config.source_max_stale_s)
        number = identity.normalise(id_number)
        card_type = "I" if identity.is_permit_number(number) else "resident"
        return await verifier.verify(number, now, config.policy_for(site), card_type=card_type)


async def issue_pass(
    config: ServerConfig,
    id_number: str,
    *,
    site: str,
    minutes: int = 5,
    now: datetime | None = None,
) -> IssuedPass:
    """Issue a pass for ``id_number``, valid at the kiosks of ``site`` only, if their current
    decision is ``pass``.

    A site is required: the pass's pseudonym is under that site's key (each site has its own,
    docs/identity.md), so a pass valid at every site would need a key every kiosk holds.
    Raises :class:`PassRefused` when the decision is not ``pass``, ``ValueError`` for a
    validity outside 1..15 minutes or a missing or bad site, and database errors as they come.
    """
    if not 1 <= minutes <= MAX_VALIDITY_S // 60:
        raise ValueError(f"--minutes must be 1..{MAX_VALIDITY_S // 60}, got {minutes}")
    if not site:
        raise ValueError("--site is required: a pass is valid at the kiosks of one site")
    if len(site) > MAX_SITE_LEN or any(ord(c) < 32 for c in site):
        raise ValueError(f"site must be at most {MAX_SITE_LEN} printable characters")
    when = now or datetime.now(UTC)
    db = open_database(config.database)
    await db.open()
    try:
        verification = await current_decision(config, db, id_number, site=site, now=when)
        if verification.decision.outcome != "pass":
            raise PassRefused(verification)
        key = await db.run(signing_key)
        pseudonym_key = await db.run(known_site_key, site)
    finally:
        await db.close()
    return make_pass(
        key,
        pseudonym_key,
        id_number,
        outcome=verification.decision.outcome,
        now=when.timestamp(),
        validity_s=minutes * 60,
        site=site,
    )
