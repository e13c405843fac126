"""Phone numbers as keyed hashes: a person is found by phone, yet no phone is ever stored.

A number is normalised (:func:`normalise_phone`) and hashed with HMAC-SHA256 under a server
secret kept in ``server_secrets`` (name :data:`PHONE_SECRET`, 32 random bytes made on first
use by any process, like the session key of server/fleet/sessions.py). A plain SHA-256 of a
phone number would be no protection: there are only about 10^10 mobile numbers, hashed in
minutes. With the key, a copy of ``person_phones`` alone reveals nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from datetime import UTC, datetime

from server.storage.connection import Connection

#: ``server_secrets`` name of the phone-hash key. Losing it orphans every stored hash:
#: re-import the phones (the key lives in the same database, so it is lost only with them).
PHONE_SECRET = "phone_hmac"

_SEPARATORS = re.compile(r"[\s\-().]")
#: A mainland mobile number without its country code.
_MOBILE = re.compile(r"1[3-9][0-9]{9}")
#: Any other country's number in E.164 (country code included), digits only.
_INTERNATIONAL = re.compile(r"[1-9][0-9]{7,14}")


def normalise_phone(text: str) -> str | None:
    """``text`` as one canonical form, or None when it is not a phone number.

    Mainland mobile numbers (11 digits starting 13–19) become ``+86`` and the 11 digits,
    whether written ``138 0013 8000``, ``+86-138-0013-8000``, ``0086…`` or ``86…``, in full-
    width digits or with blanks, dashes, dots or brackets. Another country's number must
    carry its country code (``+852…`` or ``00852…``) and keeps it.
    """
    plain = _SEPARATORS.sub("", unicodedata.normalize("NFKC", text))
    if plain.startswith("00"):
        plain = "+" + plain[2:]
    international = plain.startswith("+")
    digits = plain[1:] if international else plain
    if not digits.isascii() or not digits.isdigit():
        return None
    if digits.startswith("86") and _MOBILE.fullmatch(digits[2:]):
        return "+" + digits
    if not international and _MOBILE.fullmatch(digits):
        return "+86" + digits
    if international and not digits.startswith("86") and _INTERNATIONAL.fullmatch(digits):
        return "+" + digits
    return None


def phone_key(conn: Connection) -> bytes:
    """The HMAC key of phone hashes, created on first use by whichever process needs it
    (read first: a lookup then writes nothing)."""
    select = "SELECT secret FROM server_secrets WHERE name = ?"
    row = conn.execute(select, (PHONE_SECRET,)).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO server_secrets (name, secret, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            (PHONE_SECRET, secrets.token_hex(32), datetime.now(UTC).isoformat(timespec="seconds")),
        )
        row = conn.execute(select, (PHONE_SECRET,)).fetchone()
    return bytes.fromhex(row[0])


def phone_hash(key: bytes, canonical: str) -> str:
    """``HMAC-SHA256(key, canonical number)`` as 64 hex characters."""
    return hmac.new(key, canonical.encode("ascii"), hashlib.sha256).hexdigest()


def find_person(conn: Connection, canonical: str) -> str | None:
    """The ID number whose imported phone is ``canonical`` (normalised), or None."""
    digest = phone_hash(phone_key(conn), canonical)
    row = conn.execute(
        "SELECT id_number FROM person_phones WHERE phone_hash = ?", (digest,)
    ).fetchone()
    return None if row is None else str(row[0])
