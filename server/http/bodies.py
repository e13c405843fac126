"""Request bodies decoded straight into the typed wire models of :mod:`core.wire`.

Every refusal is a :class:`~server.errors.BadRequest` whose text starts with the offending
field's path in one style, ``events[3].seq: …`` (``body: …`` for the body as a whole), so a
kiosk log or a support call can point at the field (:func:`core.wire.error_text`, shared
with the kiosk). Values are never echoed: a refused field may hold personal data.

Bodies that are stored as sent (the heartbeat, audit events) are first decoded generically,
searched for clear ID numbers and only then converted: the privacy refusal must come before
any message that could quote a value, and the stored copy keeps unknown fields.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from core.idnumbers import SUSPECT, find_clear_ids
from core.wire import error_text, join_path
from server.errors import BadRequest

T = TypeVar("T")


async def read_body(request: web.Request, model: type[T]) -> T:
    """The request body (bounded by the app's ``client_max_size``: 413) as a ``model``."""
    return decode_body(await request.read(), model)


def decode_body(raw: bytes, model: type[T]) -> T:
    """Decode and validate ``raw`` JSON as ``model`` in one pass (the verify hot path)."""
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise BadRequest(error_text(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(_malformed(raw)) from exc


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request body as a plain JSON object, for bodies that are stored as sent."""
    return decode_object(await request.read())


def decode_object(raw: bytes) -> dict[str, Any]:
    """Strict UTF-8 JSON that must be an object; any value inside it is accepted here."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.ValidationError as exc:  # e.g. an integer literal of 5,000 digits
        raise BadRequest(error_text(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(_malformed(raw)) from exc
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


def convert(value: Any, model: type[T], where: str = "") -> T:
    """``value`` (already decoded JSON) validated as ``model``; ``where`` prefixes the path."""
    try:
        return msgspec.convert(value, model)
    except msgspec.ValidationError as exc:
        raise BadRequest(error_text(exc, where)) from exc


def refuse_clear_ids(value: Any, where: str = "", counters: Collection[str] = ()) -> None:
    """Refuse a body to be stored if any string in it, key or value, is a clear ID number.

    One search of :data:`core.idnumbers.SUSPECT` (a cheap superset of every form found)
    over all the value's texts joined by NUL (no match spans two texts) decides whether the
    path-reporting walk, :func:`core.idnumbers.find_clear_ids`, runs at all.
    """
    if SUSPECT.search("\x00".join(_texts(value, counters))) is None:
        return
    hits = find_clear_ids(value, counters)
    if hits:
        path = join_path(where, min(hits)[0]) or "body"
        raise BadRequest(f"{path}: contains what looks like a clear ID number")


def _texts(value: Any, counters: Collection[str]) -> list[str]:
    """Every string, object key and integer (as digits) in decoded JSON: what find_clear_ids
    searches (integers under a key in ``counters`` left out, as there)."""
    texts: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            texts.append(item)
        elif kind is dict:
            texts.extend(item)
            stack.extend(v for k, v in item.items() if not (k in counters and type(v) is int))
        elif kind is list:
            stack.extend(item)
        elif kind is int:  # not bool: type() is exact
            texts.append(str(item))
    return texts


def _malformed(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8"
    return "body is not valid JSON"
