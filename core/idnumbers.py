"""GB 11643-1999 citizen identity numbers: check character, validation and masking.

Also the 15-character permit numbers of the 2017 foreigner permanent-residence card
("I" card): 3 letters (nationality) + 12 digits, without a GB 11643 check character.
Private to the server so it does not depend on ``firmware_bridge``; the rules are tiny and
fixed by the standard.
"""

from __future__ import annotations

import re

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
_PERMIT = re.compile(r"[A-Z]{3}[0-9]{12}")


def check_char(first17: str) -> str:
    """Return the GB 11643 check character for the first 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("need exactly 17 ASCII digits")
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def normalise(id_number: str) -> str:
    """Strip surrounding blanks and upper-case a trailing ``x``."""
    return id_number.strip().upper()


def is_well_formed(id_number: str) -> bool:
    """True when the number has the 18-character shape (17 digits + digit or X)."""
    return _SHAPE.fullmatch(id_number) is not None


def checksum_ok(id_number: str) -> bool:
    """True when ``id_number`` is well formed and its check character is right."""
    return is_well_formed(id_number) and check_char(id_number[:17]) == id_number[17]


def is_permit_number(number: str) -> bool:
    """True for a 15-character foreigner permit number (3 letters + 12 digits, normalised)."""
    return _PERMIT.fullmatch(number) is not None


def credential_ok(number: str, card_type: str = "resident") -> bool:
    """Validate a normalised number for its card type.

    ``I`` (2017 foreigner permanent-residence card): the permit shape; ``resident``, ``J``
    (Hong Kong/Macao/Taiwan residence permit) and ``Y`` (2023 permanent-residence card):
    GB 11643.
    """
    if card_type == "I":
        return is_permit_number(number)
    return checksum_ok(number)


def make_id_number(area6: str, birth8: str, seq3: str) -> str:
    """Build a valid 18-character number from area code, birth date and sequence."""
    first17 = area6 + birth8 + seq3
    return first17 + check_char(first17)


def mask(id_number: str) -> str:
    """Mask all but the first and last four characters: ``1101**********1234``."""
    if len(id_number) <= 8:
        return "*" * len(id_number)
    return id_number[:4] + "*" * (len(id_number) - 8) + id_number[-4:]
