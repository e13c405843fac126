"""ID-number rules both ends apply: shapes per card type, the GB 11643 check character,
masking, clear-ID detection and pseudonyms.

Card types: ``resident`` (second-generation resident ID card), ``J`` (Hong Kong/Macao/Taiwan
residence permit) and ``Y`` (2023 foreigner permanent-residence card) carry an 18-character
GB 11643 number (17 digits + digit or X); ``I`` (2017 foreigner permanent-residence card)
carries a 15-character permit number (3 letters of nationality + 12 digits) without a check
character. The check character itself is ``firmware_bridge.idcard``'s, the copy that must
also run on the microcontroller.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Collection, Mapping
from typing import Any

from firmware_bridge.idcard import gb11643_check_char, mask_id

__all__ = [
    "CLEAR_ID",
    "MASKED_ID",
    "SUSPECT",
    "canonical_text",
    "check_char",
    "checksum_ok",
    "clear_ids_in_text",
    "contains_clear_id",
    "credential_ok",
    "find_clear_ids",
    "is_masked_id",
    "is_permit_number",
    "is_well_formed",
    "make_id_number",
    "mask",
    "normalise",
    "pseudonym",
    "redact",
]

_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
_PERMIT = re.compile(r"[A-Z]{3}[0-9]{12}")

#: A clear ID number standing alone (not part of a longer word or hex string), in any case:
#: an 18-character GB 11643 number or a 15-character permit number, as plainly written.
#: :func:`clear_ids_in_text` also finds disguised ones; this is its first, cheapest rule.
CLEAR_ID = re.compile(r"(?<![0-9A-Za-z])(?:[0-9]{17}[0-9Xx]|[A-Za-z]{3}[0-9]{12})(?![0-9A-Za-z])")

#: Separators someone may put inside a number: blanks and dashes (after NFKC, so the
#: full-width forms count too).
_SEP = r"[ \t\u00a0\-\u2010-\u2015]"
#: 18 digits (the last may be X) with at most one separator between any two, not inside a
#: longer run of digits; letters may touch it ("ID110101…").
_LOOSE_ID = re.compile(rf"(?<![0-9])[0-9](?:{_SEP}?[0-9]){{16}}{_SEP}?[0-9Xx](?![0-9])")
#: A permit number with a separator between its letters and digits ("USA 110101990030").
_LOOSE_PERMIT = re.compile(rf"(?<![A-Za-z])[A-Za-z]{{3}}{_SEP}[0-9]{{12}}(?![0-9])")
_SEPARATORS = re.compile(_SEP)
#: A token of 32 or more hex digits is a hash or a pseudonym, never a disguised number.
_HEX_TOKEN = re.compile(r"[0-9A-Fa-f]{32,}")
_TOKEN = re.compile(r"[0-9A-Za-z]+")
#: A cheap superset test on raw text, run before anything else on every stored string: an
#: ASCII digit followed by 11 or more digits, blanks or dashes, or any non-ASCII digit. Text
#: without either cannot hold a clear number in any of the forms above.
SUSPECT = re.compile(r"[0-9][0-9\s\-\u2010-\u2015\uff0d]{11,}|[^\x00-\x7f\D]")

#: A masked number has exactly :func:`mask`'s shape: the first and last four characters of
#: an 18-character number or a 15-character permit, stars between.
MASKED_ID = re.compile(r"[0-9]{4}\*{10}[0-9]{3}[0-9X]|[A-Z]{3}[0-9]\*{7}[0-9]{4}")


def check_char(first17: str) -> str:
    """Return the GB 11643 check character for the first 17 digits (ValueError otherwise)."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("need exactly 17 ASCII digits")
    result: str = gb11643_check_char(first17)
    return result


def normalise(id_number: str) -> str:
    """Strip surrounding blanks and upper-case (a trailing ``x``, a permit's letters)."""
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
    """Validate a normalised number for its card type (``I``: permit shape; else GB 11643)."""
    if card_type == "I":
        return is_permit_number(number)
    return checksum_ok(number)


#: The area code of the card a kiosk taps to test a new release (no province has code 99):
#: the server keeps such taps off the guards' live view.
SELF_TEST_AREA = "999999"


def is_self_test(id_or_masked: str) -> bool:
    """Whether a clear or masked number is the release self-test's card."""
    return id_or_masked.startswith(SELF_TEST_AREA[:4])


def make_id_number(area6: str, birth8: str, seq3: str) -> str:
    """Build a valid 18-character number from area code, birth date and sequence."""
    first17 = area6 + birth8 + seq3
    return first17 + check_char(first17)


def mask(id_number: str) -> str:
    """Mask all but the first and last four characters: ``1101**********1234``.

    Eight characters or fewer would keep almost everything in clear, so they are masked
    completely.
    """
    result: str = mask_id(id_number)
    return result


def pseudonym(key: bytes, id_number: str) -> str:
    """``HMAC-SHA256(key, normalised number)`` as 64 hex characters.

    ``key`` is the pseudonym key of one site (the bundle's ``site_key``), so the same person
    has a different pseudonym at every site and a stolen kiosk reveals only its own site's.
    The number is normalised first: a lower-case ``x`` read from a QR code and an upper-case
    one read from a card are the same person.
    """
    if not key:
        raise ValueError("pseudonym key must not be empty: an unkeyed hash of an ID is reversible")
    return hmac.new(key, normalise(id_number).encode("utf-8"), hashlib.sha256).hexdigest()


def canonical_text(text: str) -> str:
    """``text`` as detection reads it: NFKC (full-width digits, letters and dashes become
    ASCII) and every decimal digit of any script as its ASCII digit."""
    folded = unicodedata.normalize("NFKC", text)
    if folded.isascii():
        return folded
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in folded)


def clear_ids_in_text(text: str) -> list[str]:
    """The masked forms of every clear ID or permit number in ``text``, however written.

    Plain numbers count as they stand. A disguised one — full-width or other-script digits,
    blanks or dashes inside, letters stuck to it — counts when its digits carry a correct
    GB 11643 check character and it is not part of a 32+ digit hex token (a hash or a
    pseudonym), so that timestamps and hashes are not taken for numbers.
    """
    if SUSPECT.search(text) is None:
        return []
    norm = canonical_text(text)
    found = [m.group(0) for m in CLEAR_ID.finditer(norm)]
    taken = [m.span() for m in CLEAR_ID.finditer(norm)]
    for m in _LOOSE_ID.finditer(norm):
        if any(a < m.end() and m.start() < b for a, b in taken):
            continue
        compact = _SEPARATORS.sub("", m.group(0)).upper()
        if checksum_ok(compact) and not _in_hex_token(norm, m.start()):
            found.append(compact)
    found.extend(_SEPARATORS.sub("", m.group(0)) for m in _LOOSE_PERMIT.finditer(norm))
    return [mask(normalise(n)) for n in found]


def _in_hex_token(text: str, at: int) -> bool:
    for token in _TOKEN.finditer(text):
        if token.start() <= at < token.end():
            return _HEX_TOKEN.fullmatch(token.group(0)) is not None
    return False


def contains_clear_id(text: str) -> bool:
    """Whether ``text`` holds a full ID or permit number in any of the forms above."""
    return bool(clear_ids_in_text(text))


def redact(text: str) -> str:
    """``text`` with every clear ID number masked. Text holding a disguised number comes
    back in its canonical form (NFKC, ASCII digits), since that is where it was found."""
    if not clear_ids_in_text(text):
        return text
    norm = canonical_text(text)
    norm = CLEAR_ID.sub(lambda m: mask(normalise(m.group(0))), norm)
    norm = _LOOSE_ID.sub(lambda m: _mask_loose(m.group(0), norm, m.start()), norm)
    return _LOOSE_PERMIT.sub(lambda m: mask(normalise(_SEPARATORS.sub("", m.group(0)))), norm)


def _mask_loose(found: str, text: str, at: int) -> str:
    compact = _SEPARATORS.sub("", found).upper()
    if checksum_ok(compact) and not _in_hex_token(text, at):
        return mask(compact)
    return found


def is_masked_id(text: str) -> bool:
    """Whether ``text`` has exactly the shape :func:`mask` gives a number or a permit."""
    return MASKED_ID.fullmatch(text) is not None


def find_clear_ids(value: Any, counters: Collection[str] = ()) -> list[tuple[str, str]]:
    """``(path, masked number)`` for every clear ID anywhere in a JSON-like value.

    Keys count as much as values, and integers as much as text (a number sent as a JSON
    integer is still a number), except an integer under a key named in ``counters``: a
    typed counter such as an event's ``mono_ns`` reaches 18 digits after about three years
    of uptime and is no ID. Walks iteratively, so depth is no problem; the result is
    masked so that an error built from it does not itself leak the number. The path is
    ``a.b[2]`` (a key that holds one is reported as its parent's path).

    Most values hold no number at all: one search of :data:`SUSPECT` over all their texts
    joined by NUL (which no match can span) settles those before the path-keeping walk.
    """
    if SUSPECT.search("\x00".join(_texts(value, counters))) is None:
        return []
    hits: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            hits.extend((path, masked) for masked in clear_ids_in_text(item))
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            hits.extend((path, masked) for masked in clear_ids_in_text(str(item)))
        elif isinstance(item, Mapping):
            for key, child in item.items():
                key_text = str(key)
                hits.extend((path, masked) for masked in clear_ids_in_text(key_text))
                if key_text in counters and type(child) is int:
                    continue
                stack.append((f"{path}.{key_text}" if path else key_text, child))
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return hits


def _texts(value: Any, counters: Collection[str]) -> list[str]:
    """Every text :func:`find_clear_ids` searches, without the paths: strings, keys and
    integers as digits (not those under a key in ``counters``)."""
    texts: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            texts.append(str(item))
        elif isinstance(item, Mapping):
            for key, child in item.items():
                key_text = str(key)
                texts.append(key_text)
                if not (key_text in counters and type(child) is int):
                    stack.append(child)
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return texts
