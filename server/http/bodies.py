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

import asyncio
import json
import logging
import re
from collections.abc import Collection
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from core.idnumbers import find_clear_ids
from core.wire import error_text, join_path
from server.appkeys import CONFIG
from server.errors import BadRequest
from server.http.middleware import json_error

log = logging.getLogger(__name__)

T = TypeVar("T")


async def read_raw(request: web.Request, max_bytes: int | None = None) -> bytes:
    """The whole body, within ``[limits] body_timeout_s`` (else ``408``, connection closed).

    Without ``max_bytes`` the app's ``client_max_size`` bounds it (413). With it (bulk admin
    bodies, beyond ``client_max_size``) the body is read to its end in a loop — a single
    ``content.read(n)`` returns whatever has arrived, not ``n`` bytes — within
    ``bulk_body_timeout_s``. A client that never sends the body it announced holds a request
    slot for that long at most.
    """
    limits = request.app[CONFIG].limits
    timeout = limits.body_timeout_s if max_bytes is None else limits.bulk_body_timeout_s
    try:
        async with asyncio.timeout(timeout):
            if max_bytes is None:
                return await request.read()
            return await _read_upto(request, max_bytes)
    except TimeoutError:
        log.info("%s %s: body not received within %.0f s", request.method, request.path, timeout)
        raise _closing(
            json_error(
                web.HTTPRequestTimeout,
                "request_timeout",
                f"request body not received within {timeout:.0f} s",
            )
        ) from None


async def _read_upto(request: web.Request, max_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes, request.content_length)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(1 << 20):
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes, size)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int, size: int) -> web.HTTPException:
    return _closing(too_large(max_bytes, size))


def too_large(
    max_bytes: int, size: int, detail: str = "request body too large"
) -> web.HTTPException:
    """``413 too_large``: docs/api.md's one answer for a body over its route's limit, also when
    the limit is checked after reading (the heartbeat's 16 KiB of stored status)."""
    body = json.dumps({"error": "too_large", "detail": detail})
    return web.HTTPRequestEntityTooLarge(
        max_size=max_bytes, actual_size=size, text=body, content_type="application/json"
    )


def _closing(error: web.HTTPException) -> web.HTTPException:
    """``error`` ending its connection: the rest of the body is not waited for."""
    error.force_close()
    return error


async def read_body(request: web.Request, model: type[T]) -> T:
    """The request body (bounded in size and time, :func:`read_raw`) as a ``model``."""
    return decode_body(await read_raw(request), model)


def decode_body(raw: bytes, model: type[T]) -> T:
    """Decode and validate ``raw`` JSON as ``model`` in one pass (the verify hot path)."""
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise BadRequest(error_text(exc, model=model)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(_malformed(raw)) from exc


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request body as a plain JSON object, for bodies that are stored as sent."""
    return decode_object(await read_raw(request))


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
        raise BadRequest(error_text(exc, where, model)) from exc


def refuse_clear_ids(value: Any, where: str = "", counters: Collection[str] = ()) -> None:
    """Refuse a body to be stored if any string in it, key or value, is a clear ID number
    (:func:`core.idnumbers.find_clear_ids`); the error names the first field, never the
    number."""
    hits = find_clear_ids(value, counters)
    if hits:
        path = join_path(where, min(hits)[0]) or "body"
        raise BadRequest(f"{path}: contains what looks like a clear ID number")


#: A mainland mobile number, its digits perhaps split by blanks or dashes, perhaps after +86.
_MOBILE = re.compile(r"(?<![0-9])(?:\+?86)?1[3-9][0-9]{9}(?![0-9])")
_DIGIT_SEPARATORS = re.compile(r"(?<=[0-9])[\s-](?=[0-9])")


def refuse_personal_numbers(text: str, where: str) -> None:
    """Refuse free text a person types (a gate reason, an alert note) that holds a clear ID
    number or a mobile phone number: it is stored and shown to others, and phones are kept
    nowhere else but as keyed hashes (server/lookup/phones.py)."""
    refuse_clear_ids(text, where)
    if _MOBILE.search(_DIGIT_SEPARATORS.sub("", text)):
        raise BadRequest(f"{where}: contains what looks like a phone number")


def _malformed(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8"
    return "body is not valid JSON"
