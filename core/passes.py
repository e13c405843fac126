"""Signed offline passes: the format, signing and the offline check (docs/passes.md).

A pass is ``SHY1.<payload_b64>.<signature_b64>`` (base64url, no padding). The signature is
Ed25519 by the server's key — the ``server_key`` of the device bundle, never a key from the
network — over the exact ASCII bytes ``"SHY1." + payload_b64``. The payload is JSON:
``{"v": 1, "pid": pseudonym, "m": masked id, "o": outcome at issue, "iat": s, "exp": s,
"n": 16 hex nonce, "s": site or ""}``.

:func:`verify_pass` refuses, in this order: a text that is not ``SHY1.`` + two base64url
parts (``bad_format``), undecodable base64 (``bad_base64``), a bad server key
(``bad_key``), a signature that does not verify (``bad_signature``), a payload that is not
the documented JSON (``bad_payload``), another version (``wrong_version``), an untrusted
clock (``clock_untrusted``), ``exp < now`` (``expired``), ``iat > now + 60``
(``not_yet_valid``), ``exp - iat > 900`` (``validity_too_long``), a pass bound to another
site (``site_mismatch``) and a nonce already used at this kiosk (``replayed``, see
:class:`ReplayGuard`). Once the signature verifies, the :class:`PassCheck` carries the
pseudonym, masked number, outcome and expiry even when the pass is refused, for the audit.

The server issues passes with :func:`sign_pass` and the kiosk checks them with
:func:`verify_pass`: one copy of the format for both.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.canonical import canonical_json
from core.outcomes import is_decision

__all__ = [
    "MAX_CLOCK_SKEW_S",
    "MAX_VALIDITY_S",
    "PREFIX",
    "PassCheck",
    "ReplayGuard",
    "b64url",
    "is_pass",
    "sign_pass",
    "verify_pass",
]

PREFIX = "SHY1."
VERSION = 1
MAX_VALIDITY_S = 15 * 60
#: A pass issued up to this far in the kiosk's future is still accepted (clock skew).
MAX_CLOCK_SKEW_S = 60
#: Longest pass text looked at; a real one is about 330 characters.
MAX_PASS_LEN = 2048
MAX_SITE_LEN = 100


_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_SIGNATURE_B64_LEN = 86  # 64 bytes → 86 base64url characters without padding


@dataclass(frozen=True)
class PassCheck:
    """The verdict on one pass; the other fields are set once the signature verified."""

    ok: bool
    reason: str  # "ok" or why the pass is refused
    pseudonym: str = ""
    masked_id: str = ""
    outcome: str = ""
    expires_at: int | None = None  # unix seconds
    nonce: str = ""  # the pass's `n`: what the kiosk claims at the server (docs/passes.md)


class ReplayGuard:
    """The nonces of passes accepted at this kiosk, each remembered until its pass expires.

    Thread-safe. Memory is bounded by ``max_entries``: expired nonces are forgotten first;
    when every remembered pass is still valid the guard refuses new ones (fail closed) rather
    than forget a nonce that could then be replayed. At one tap every 3 s and 15 minutes of
    validity a kiosk sees about 300 live passes, far below the default bound. Memory only: a
    restarted agent forgets (docs/passes.md).
    """

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._expiry: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def size(self) -> int:
        """Nonces remembered now (expired ones may linger until the next call)."""
        with self._lock:
            return len(self._expiry)

    def seen(self, nonce: str, now: float) -> bool:
        """Whether ``nonce`` is remembered as used (and its pass not yet expired)."""
        with self._lock:
            self._forget_expired(now)
            return nonce in self._expiry

    def claim(self, nonce: str, expires_at: int, now: float) -> str:
        """Record a use: ``"ok"``, ``"replayed"`` (already used) or ``"full"``."""
        with self._lock:
            self._forget_expired(now)
            if nonce in self._expiry:
                return "replayed"
            if len(self._expiry) >= self.max_entries:
                return "full"
            self._expiry[nonce] = expires_at
            heapq.heappush(self._heap, (expires_at, nonce))
            return "ok"

    def _forget_expired(self, now: float) -> None:
        # A pass is valid while exp >= now, so its nonce must be kept until exp < now.
        while self._heap and self._heap[0][0] < now:
            _, nonce = heapq.heappop(self._heap)
            self._expiry.pop(nonce, None)


def b64url(data: bytes) -> str:
    """base64url without ``=`` padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_pass(payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """The pass text for ``payload``: ``SHY1.<payload_b64>.<signature_b64>``, where ``sign``
    makes the Ed25519 signature with the server's key."""
    signed = PREFIX + b64url(canonical_json(payload))
    return f"{signed}.{b64url(sign(signed.encode('ascii')))}"


def is_pass(text: str) -> bool:
    """Cheap test: does this QR text claim to be a signed pass?"""
    return text.startswith(PREFIX)


def _b64decode(text: str) -> bytes | None:
    """Strict base64url without padding (canonical encoding only), or None."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        return None  # non-zero padding bits: another spelling of the same bytes
    return raw


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**40


def _payload(raw: bytes) -> dict[str, Any] | None:
    """The payload object if it has the documented fields and types (``v`` checked later)."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or "v" not in doc:
        return None
    if doc["v"] != VERSION or isinstance(doc["v"], bool):
        return doc  # another version: its fields are not ours to judge
    ok = (
        isinstance(doc.get("pid"), str)
        and _HEX64.fullmatch(doc["pid"]) is not None
        and isinstance(doc.get("m"), str)
        and len(doc["m"]) <= 32
        and is_decision(doc.get("o"))
        and _integer(doc.get("iat"))
        and _integer(doc.get("exp"))
        and isinstance(doc.get("n"), str)
        and _HEX16.fullmatch(doc["n"]) is not None
        and isinstance(doc.get("s"), str)
        and len(doc["s"]) <= MAX_SITE_LEN
    )
    return doc if ok else None


def verify_pass(
    text: str,
    server_key_hex: str,
    *,
    now: float,
    clock_trusted: bool,
    site: str,
    seen: ReplayGuard,
) -> PassCheck:
    """Check a pass offline against the bundle's ``server_key`` (64 hex).

    ``now`` is the kiosk's wall clock (unix seconds), ``clock_trusted`` whether it is to be
    believed, ``site`` the kiosk's site. A pass that is accepted has its nonce recorded in
    ``seen``, so a second use at this kiosk is refused; a refused pass does not use it up.
    """
    if not isinstance(text, str) or len(text) > MAX_PASS_LEN or not is_pass(text):
        return PassCheck(False, "bad_format")
    parts = text[len(PREFIX) :].split(".")
    if len(parts) != 2 or not parts[0] or len(parts[1]) != _SIGNATURE_B64_LEN:
        return PassCheck(False, "bad_format")
    payload_b64, signature_b64 = parts
    raw = _b64decode(payload_b64)
    signature = _b64decode(signature_b64)
    if raw is None or signature is None:
        return PassCheck(False, "bad_base64")
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(server_key_hex))
    except ValueError:
        return PassCheck(False, "bad_key")
    try:
        key.verify(signature, (PREFIX + payload_b64).encode("ascii"))
    except InvalidSignature:
        return PassCheck(False, "bad_signature")
    doc = _payload(raw)
    if doc is None:
        return PassCheck(False, "bad_payload")
    if doc["v"] != VERSION or isinstance(doc["v"], bool):
        return PassCheck(False, "wrong_version")
    iat: int = doc["iat"]
    exp: int = doc["exp"]

    def verdict(reason: str) -> PassCheck:
        return PassCheck(reason == "ok", reason, doc["pid"], doc["m"], doc["o"], exp, doc["n"])

    if exp < iat:
        return verdict("bad_payload")
    if not clock_trusted:
        return verdict("clock_untrusted")
    if exp < now:
        return verdict("expired")
    if iat > now + MAX_CLOCK_SKEW_S:
        return verdict("not_yet_valid")
    if exp - iat > MAX_VALIDITY_S:
        return verdict("validity_too_long")
    if doc["s"] and doc["s"] != site:
        return verdict("site_mismatch")
    claimed = seen.claim(doc["n"], exp, now)
    if claimed == "replayed":
        return verdict("replayed")
    if claimed == "full":
        return verdict("replay_guard_full")
    return verdict("ok")
