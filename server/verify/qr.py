"""QR credentials: an opaque health-code token resolved to a person (docs/api.md).

A token is what the kiosk's camera decoded: 1..1024 printable characters, opaque to us. It is
never stored or logged in clear: the ``qr_tokens`` table keys on its SHA-256 and log lines carry
:func:`token_ref` (its length and the first 8 hex digits of the hash). Resolution goes through
the health-code source: the local table first, then (when configured) the HTTP health-code
upstream's ``resolve_url`` (:class:`server.verify.upstream.HttpTokenResolver`).

A :class:`Resolution` is ``ok`` (with the ID number), ``unknown`` (no such token, expired, or a
token that cannot be one) or ``error`` (the resolver failed: the answer is then ``check``, not
``invalid_credential``, because the code may be perfectly good).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from core import idnumbers as identity
from core.wire import MAX_TOKEN_LEN
from server.storage.db import Database

log = logging.getLogger(__name__)


Clock = Callable[[], datetime]
ResolutionStatus = Literal["ok", "unknown", "error"]


def token_digest(token: str) -> str:
    """SHA-256 of the token's UTF-8 bytes, lower-case hex (the ``qr_tokens`` key)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_ref(token: str) -> str:
    """What a log line may say about a token: ``len=37 sha256:3f9a0c12``."""
    return f"len={len(token)} sha256:{token_digest(token)[:8]}"


def token_shape_ok(token: str) -> bool:
    """1..1024 characters, all printable (no control characters, no line breaks)."""
    return 0 < len(token) <= MAX_TOKEN_LEN and token.isprintable()


@dataclass(frozen=True)
class Resolution:
    """What a token resolved to; ``id_number`` is set only with ``ok``."""

    status: ResolutionStatus
    id_number: str = field(default="", repr=False)
    error: str = ""  # with "error": "timeout" | "failed"

    @classmethod
    def found(cls, id_number: str) -> Resolution:
        """The token belongs to this (normalised, valid) number."""
        return cls("ok", id_number)

    @classmethod
    def unknown(cls) -> Resolution:
        """No live token of that value: unknown, expired, foreign or garbage."""
        return cls("unknown")

    @classmethod
    def failed(cls, error: str) -> Resolution:
        """The resolver could not answer (``timeout`` or ``failed``)."""
        return cls("error", error=error)


class TokenResolver(Protocol):
    """Maps a token to an ID number, or says it does not know it."""

    async def resolve(self, token: str, now: datetime) -> Resolution:
        """Resolve ``token`` as of ``now``; may raise (the chain maps it to ``error``)."""
        ...


def valid_number(number: str) -> str | None:
    """``number`` normalised if it is a valid ID number or permit number, else None."""
    normalised = identity.normalise(number)
    if identity.checksum_ok(normalised) or identity.is_permit_number(normalised):
        return normalised
    return None


class LocalTokenResolver:
    """Tokens imported into ``qr_tokens`` (``kiosk server import qr_token``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def resolve(self, token: str, now: datetime) -> Resolution:
        """Look the token's hash up (one point read through ``db.fetch``: inline on SQLite,
        the asyncio pool on PostgreSQL); an expired row is unknown."""
        rows = await self._db.fetch(
            "SELECT id_number, expires_at FROM qr_tokens WHERE token_sha256 = ?",
            (token_digest(token),),
        )
        if not rows:
            return Resolution.unknown()
        row = rows[0]
        if datetime.fromisoformat(row[1]) <= now.astimezone(UTC):
            return Resolution.unknown()
        number = valid_number(str(row[0]))
        return Resolution.unknown() if number is None else Resolution.found(number)


class ChainResolver:
    """Asks each resolver in turn until one knows the token.

    Each is bounded by ``timeout_s``. ``unknown`` moves on to the next; an ``error`` is
    remembered and returned if no later resolver knows the token either (so an upstream
    outage reads as a failed source, never as an invalid code). Logs once when a resolver
    starts failing and once when it recovers, with :func:`token_ref` only.
    """

    def __init__(self, resolvers: Sequence[TokenResolver], *, timeout_s: float) -> None:
        self.resolvers = list(resolvers)
        self.timeout_s = timeout_s
        self._failing: set[int] = set()

    async def resolve(self, token: str, now: datetime) -> Resolution:
        """The first ``ok`` answer; else the first ``error``; else ``unknown``.

        Surrounding white space is not part of a token (the importer strips it too).
        """
        token = token.strip()
        if not token_shape_ok(token):
            return Resolution.unknown()
        failure: Resolution | None = None
        for index, resolver in enumerate(self.resolvers):
            try:
                result = await asyncio.wait_for(resolver.resolve(token, now), self.timeout_s)
            except TimeoutError:
                result = Resolution.failed("timeout")
                why = f"timed out after {self.timeout_s} s"
            except Exception as exc:  # the message never holds the token (see upstream.py)
                result = Resolution.failed("failed")
                why = f"{type(exc).__name__}: {exc}"
            else:
                why = result.error
            if result.status == "error":
                if index not in self._failing:
                    self._failing.add(index)
                    log.warning(
                        "qr resolver %s failing (token %s): %s",
                        type(resolver).__name__,
                        token_ref(token),
                        why,
                    )
                failure = failure or result
                continue
            if index in self._failing:
                self._failing.discard(index)
                log.info("qr resolver %s recovered", type(resolver).__name__)
            if result.status == "ok":
                return result
        return failure or Resolution.unknown()
