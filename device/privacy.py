"""Keep full ID numbers out of everything the kiosk stores or logs.

DESIGN.md "Privacy": an ID number exists in clear only in memory during a lookup. The cache
and the journal hold a pseudonym (HMAC with the fleet key, so the same person maps to the
same key on every kiosk of the fleet but cannot be reversed without the key) and a masked
number a guard can compare with the card in hand. Logs are filtered so that a careless
``log.info("read %s", id_number)`` anywhere in the agent still never writes one out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ID_NUMBER_RE",
    "IdNumberRedactor",
    "contains_id_number",
    "find_id_numbers",
    "mask_id",
    "pseudonym",
    "redact",
]

#: An 18-character PRC resident ID number (GB 11643): 17 digits and a digit or X check
#: character, standing alone as a word.
ID_NUMBER_RE = re.compile(r"\b\d{17}[\dXx]\b")

_KEEP = 4  # characters kept in clear at each end: region prefix and the last four


def mask_id(id_number: str) -> str:
    """Mask all but the first and last four characters, e.g. ``1101**********1234``.

    Strings shorter than 9 characters would keep almost everything in clear, so they are
    masked completely.
    """
    n = len(id_number)
    if n < 2 * _KEEP + 1:
        return "*" * n
    return id_number[:_KEEP] + "*" * (n - 2 * _KEEP) + id_number[-_KEEP:]


def pseudonym(fleet_key: bytes, id_number: str) -> str:
    """Return HMAC-SHA256(fleet_key, ID number) as 64 hex characters.

    ``fleet_key`` is the bundle's key of that name: the pseudonym key of the kiosk's own site
    (each site has its own, docs/identity.md), so the same person has a different pseudonym
    at every site.

    The number is stripped and upper-cased first so a lower-case ``x`` check character read
    from a QR code and an upper-case one read from a card give the same person one key.
    """
    if not fleet_key:
        raise ValueError("fleet key must not be empty: an unkeyed hash of an ID is reversible")
    normalised = id_number.strip().upper().encode("utf-8")
    return hmac.new(fleet_key, normalised, hashlib.sha256).hexdigest()


def contains_id_number(text: str) -> bool:
    """Whether ``text`` contains something that looks like a full 18-character ID number."""
    return ID_NUMBER_RE.search(text) is not None


def redact(text: str) -> str:
    """Replace every full ID number in ``text`` by its masked form."""
    return ID_NUMBER_RE.sub(lambda m: mask_id(m.group(0)), text)


class IdNumberRedactor(logging.Filter):
    """Logging filter that masks ID numbers in a record's message, arguments and traceback.

    Install it on every kiosk log *handler* (handler filters also see records propagated
    from child loggers, logger filters do not). The record is only rewritten when it
    contains an ID number: the message is then formatted with its arguments and stored
    already merged, because masking an argument in place could break a ``%d`` placeholder.
    Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always keep it."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A malformed format string: logging would report it anyway; still make sure
            # neither part carries an ID number in clear.
            message = f"{record.msg} {record.args!r}"
        if contains_id_number(message):
            record.msg = redact(message)
            record.args = None
        if record.exc_text:
            if contains_id_number(record.exc_text):
                record.exc_text = redact(record.exc_text)
        elif record.exc_info and record.exc_info[0] is not None:
            # Formatters reuse a pre-filled exc_text, so a redacted one replaces the
            # traceback they would otherwise render with the number in it.
            text = logging.Formatter().formatException(record.exc_info)
            if contains_id_number(text):
                record.exc_text = redact(text)
        if record.stack_info and contains_id_number(record.stack_info):
            record.stack_info = redact(record.stack_info)
        return True


def _values(value: Any) -> list[str]:
    """Every string (and integer, as text) inside a JSON-like value, keys included."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            found.append(str(item))
        elif isinstance(item, Mapping):
            for key, sub in item.items():
                stack.append(key)
                stack.append(sub)
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return found


def find_id_numbers(value: Any) -> list[str]:
    """Masked forms of the full ID numbers found anywhere in a JSON-like value.

    Used as a privacy guard before anything is persisted; the result is masked so that the
    error raised by the guard does not itself leak the number.
    """
    hits: list[str] = []
    for text in _values(value):
        hits.extend(mask_id(m.group(0)) for m in ID_NUMBER_RE.finditer(text))
    return hits
