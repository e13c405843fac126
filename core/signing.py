"""The exact bytes a kiosk signs, and checking a kiosk's signature (docs/identity.md).

Every signed message is UTF-8 text, one field per line, starting with a purpose tag so a
signature made for one purpose can never be replayed as another:

* enrolment, signed by the new key (proof of possession)::

    siheyi-enrol-v1\\n<serial>\\n<code>\\n<public_key_hex>

* session, signed by the current key (and, when rotating, by the new key as well)::

    siheyi-session-v1\\n<device_id>\\n<nonce>\\n<time>\\n<new_public_key_hex or empty>

The kiosk (``device/link/identity.py``) signs and the server checks these very bytes, so
there is one copy of them, here. Verifying one signature costs ~60 µs, so it happens once
per session, never per request.
"""

from __future__ import annotations

import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PUBLIC_KEY_HEX = re.compile(r"[0-9a-f]{64}")
SIGNATURE_HEX = re.compile(r"[0-9a-f]{128}")
ENROL_TAG = "siheyi-enrol-v1"
SESSION_TAG = "siheyi-session-v1"


def enrol_message(serial: str, code: str, public_key_hex: str) -> bytes:
    """What a kiosk signs with its new key when it enrols."""
    return f"{ENROL_TAG}\n{serial}\n{code}\n{public_key_hex}".encode()


def session_message(device_id: str, nonce: str, time_s: int, new_public_key_hex: str = "") -> bytes:
    """What a kiosk signs to turn a challenge into a session (optionally rotating its key)."""
    return f"{SESSION_TAG}\n{device_id}\n{nonce}\n{time_s}\n{new_public_key_hex}".encode()


def signature_ok(public_key_hex: str, signature_hex: str, message: bytes) -> bool:
    """True when ``signature_hex`` is a valid Ed25519 signature of ``message``."""
    if PUBLIC_KEY_HEX.fullmatch(public_key_hex) is None:
        return False
    if SIGNATURE_HEX.fullmatch(signature_hex) is None:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        key.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True
