"""What a credential source hands the verifier.

The clear ID number lives only in this object, only in memory, and only for the length of one
lookup: `repr()` masks it so it cannot leak into a log line or a traceback by accident.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from core.idnumbers import mask as mask_id


@dataclass(frozen=True)
class Credential:
    """One completed credential read (card frame received, or later: QR decoded)."""

    kind: str  # "id_card" | "ss_card" | "qr"
    id_number: str = field(repr=False)  # "" for a QR credential
    completed_at: float  # time.monotonic() when the last byte arrived / the code was decoded
    source: str = "reader"
    card_type: str = "resident"
    checksum_ok: bool = True
    valid_to: str = ""  # "YYYY-MM-DD", "长期" or "" when the credential has no expiry
    readable: bool = True  # False: a card was presented but its data could not be read
    token: str = field(default="", repr=False)  # QR payload: opaque, never logged in full

    @property
    def masked_id(self) -> str:
        return mask_id(self.id_number)

    def __repr__(self) -> str:
        return (
            f"Credential(kind={self.kind!r}, id={self.masked_id}, source={self.source!r}, "
            f"card_type={self.card_type!r}, checksum_ok={self.checksum_ok})"
        )

    @property
    def expires(self) -> bool:
        """True when the credential has an end date, so its validity depends on the time."""
        return bool(self.valid_to) and self.valid_to != "长期"

    def expired(self, today: dt.date) -> bool:
        """True when the card's validity ended before `today` ("长期" never expires)."""
        if not self.expires:
            return False
        try:
            return dt.date.fromisoformat(self.valid_to) < today
        except ValueError:
            return True  # an unreadable expiry is not a valid card
