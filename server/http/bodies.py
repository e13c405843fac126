"""Request bodies decoded straight into the typed wire models of :mod:`core.wire`.

Every refusal is a :class:`~server.errors.BadRequest` whose text starts with the offending
field's path in one style, ``events[3].seq: …`` (``body: …`` for the body as a whole), so a
kiosk log or a support call can point at the field; msgspec's own ``$.events[3].seq``
notation is rewritten into it. Values are never echoed: a refused field may hold personal data.

Bodies that are stored as sent (the heartbeat, audit events) are first decoded generically,
searched for clear ID numbers and only then converted: the privacy refusal must come before
any message that could quote a value, and the stored copy keeps unknown fields.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from core.idnumbers import find_clear_ids
from server.errors import BadRequest

T = TypeVar("T")

_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_ECHO = re.compile(r"^Invalid (?:enum )?value .*$", re.DOTALL)
#: A message a model's ``__post_init__`` raises already names its field: ``"name: why"``.
_NAMED = re.compile(r"^(?P<field>[A-Za-z_][A-Za-z0-9_]*): (?P<why>.*)$", re.DOTALL)


async def read_body(request: web.Request, model: type[T]) -> T:
    """The request body (bounded by the app's ``client_max_size``: 413) as a ``model``."""
    return decode_body(await request.read(), model)


def decode_body(raw: bytes, model: type[T]) -> T:
    """Decode and validate ``raw`` JSON as ``model`` in one pass (the verify hot path)."""
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise BadRequest(field_error(exc)) from exc
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
        raise BadRequest(field_error(exc)) from exc
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
        raise BadRequest(field_error(exc, where)) from exc


def refuse_clear_ids(value: Any, where: str = "") -> None:
    """Refuse a body to be stored if any string in it, key or value, is a clear ID number."""
    hits = find_clear_ids(value)
    if hits:
        path = _join(where, min(hits)[0]) or "body"
        raise BadRequest(f"{path}: contains what looks like a clear ID number")


def field_error(exc: msgspec.ValidationError, where: str = "") -> str:
    """msgspec's message as ``path: why``, the path in this API's ``a.b[2].c`` style."""
    parts = _AT.match(str(exc))
    assert parts is not None  # the pattern matches any text
    message, path = parts["message"], _join(where, (parts["path"] or "").lstrip("."))
    missing = _MISSING.match(message)
    if missing:
        return f"{_join(path, missing['field'])}: required"
    named = _NAMED.match(message)
    if named:
        return f"{_join(path, named['field'])}: {named['why']}"
    if _ECHO.match(message):
        message = "not one of the allowed values"
    elif message.startswith("Expected `object`") and not path:
        return "body must be a JSON object"
    return f"{path or 'body'}: {message[:1].lower()}{message[1:]}"


def _join(parent: str, child: str) -> str:
    if not parent or not child:
        return parent or child
    return f"{parent}{child}" if child.startswith("[") else f"{parent}.{child}"


def _malformed(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8"
    return "body is not valid JSON"
