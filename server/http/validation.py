"""Small validators for JSON request bodies; each failure raises :class:`BadRequest`.

Unknown fields are ignored (docs/api.md); wrong types, missing fields and over-long strings
are refused with a message naming the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from server.errors import BadRequest

MAX_INT = 2**63 - 1


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON")


def parse_object(body: bytes) -> dict[str, Any]:
    """Decode a UTF-8 JSON body that must be an object."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise BadRequest("body is not UTF-8") from exc
    except (ValueError, RecursionError, TypeError, OverflowError) as exc:
        # JSONDecodeError is a ValueError, and so is an integer literal longer than
        # sys.get_int_max_str_digits(); none of these is a server fault.
        raise BadRequest("body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


# A clear identity number standing alone (not part of a longer word or hex string): an
# 18-character GB 11643 number (17 digits + digit or X) or a 15-character foreigner
# permanent-residence permit number (3 letters + 12 digits).
CLEAR_ID = re.compile(r"(?<![0-9A-Za-z])(?:[0-9]{17}[0-9Xx]|[A-Z]{3}[0-9]{12})(?![0-9A-Za-z])")


def refuse_clear_ids(value: Any, where: str) -> None:
    """Raise :class:`BadRequest` naming the field if any string in ``value`` holds a clear ID.

    Walks dicts (keys and values) and lists iteratively, so depth is no problem. The error
    names the field, never the number.
    """
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if CLEAR_ID.search(item):
                raise BadRequest(f"{path}: contains what looks like a clear ID number")
        elif isinstance(item, dict):
            for key, child in item.items():
                name = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and CLEAR_ID.search(key):
                    raise BadRequest(
                        f"{path or 'body'}: a key contains what looks like a clear ID number"
                    )
                stack.append((name, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))


def _get(obj: Mapping[str, Any], key: str, where: str, required: bool) -> Any:
    if key not in obj:
        if required:
            raise BadRequest(f"{where}{key}: required")
        return None
    return obj[key]


def string(
    obj: Mapping[str, Any],
    key: str,
    *,
    where: str = "",
    max_len: int = 256,
    min_len: int = 0,
    pattern: re.Pattern[str] | None = None,
    required: bool = True,
    nullable: bool = False,
) -> str | None:
    """A string field of bounded length, optionally matching ``pattern``."""
    value = _get(obj, key, where, required)
    if value is None:
        if required and not nullable:
            raise BadRequest(f"{where}{key}: must be a string")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{where}{key}: must be a string")
    if not min_len <= len(value) <= max_len:
        raise BadRequest(f"{where}{key}: length must be {min_len}..{max_len}")
    if pattern is not None and pattern.fullmatch(value) is None:
        raise BadRequest(f"{where}{key}: invalid format")
    return value


def req_string(obj: Mapping[str, Any], key: str, **kwargs: Any) -> str:
    """A required, non-null string field."""
    value = string(obj, key, **kwargs)
    assert value is not None
    return value


def integer(
    obj: Mapping[str, Any],
    key: str,
    *,
    where: str = "",
    lo: int = 0,
    hi: int = MAX_INT,
    required: bool = True,
) -> int | None:
    """An integer field (booleans refused) within ``[lo, hi]``."""
    value = _get(obj, key, where, required)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{where}{key}: must be an integer")
    if not lo <= value <= hi:
        raise BadRequest(f"{where}{key}: must be in [{lo}, {hi}]")
    return value


def number(
    obj: Mapping[str, Any], key: str, *, where: str = "", required: bool = False
) -> float | None:
    """A finite, non-negative number field, or null."""
    value = _get(obj, key, where, required)
    if value is None:
        if required:
            raise BadRequest(f"{where}{key}: must be a number")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{where}{key}: must be a number")
    if isinstance(value, int) and not 0 <= value <= 10**15:
        raise BadRequest(f"{where}{key}: must be a finite number in [0, 1e15]")
    if not math.isfinite(value) or value < 0 or value > 1e15:
        raise BadRequest(f"{where}{key}: must be a finite number in [0, 1e15]")
    return float(value)


def boolean(obj: Mapping[str, Any], key: str, *, where: str = "", required: bool = True) -> bool:
    """A boolean field (absent and optional → False)."""
    value = _get(obj, key, where, required)
    if value is None and not required:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{where}{key}: must be a boolean")
    return value


def obj(
    parent: Mapping[str, Any], key: str, *, where: str = "", required: bool = True
) -> dict[str, Any] | None:
    """A nested JSON object field."""
    value = _get(parent, key, where, required)
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"{where}{key}: must be an object")
    return value


def array(parent: Mapping[str, Any], key: str, *, lo: int, hi: int) -> list[Any]:
    """A required JSON array with ``lo..hi`` items."""
    value = _get(parent, key, "", True)
    if not isinstance(value, list):
        raise BadRequest(f"{key}: must be an array")
    if not lo <= len(value) <= hi:
        raise BadRequest(f"{key}: must have {lo}..{hi} items, got {len(value)}")
    return value


def req_integer(obj: Mapping[str, Any], key: str, **kwargs: Any) -> int:
    """A required integer field."""
    value = integer(obj, key, required=True, **kwargs)
    assert value is not None
    return value
