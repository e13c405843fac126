"""Tokens for people: bearer tokens for scripts and the board's session cookie.

A token is 32 random bytes; only its SHA-256 is stored (``admin_tokens``), so a database
dump opens no session. The board's cookie is ``HttpOnly`` (page scripts cannot read it),
``SameSite=Strict`` (other sites' pages cannot send it) and ``Secure`` behind TLS. CSRF
protection does not rely on SameSite alone: a request authenticated by the cookie that
changes something must also carry :func:`csrf_token` of that session, which only a page the
server rendered for that session knows (it is derived from the secret token, so nothing more
is stored and every server process computes the same value).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from aiohttp import web

from server.accounts import users
from server.appkeys import CONFIG, DATABASE
from server.fleet.sessions import now_iso, utc_now

COOKIE = "siheyi_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """The CSRF token of a board session: unguessable without the session's secret."""
    return hmac.new(session_token.encode(), b"siheyi csrf v1", hashlib.sha256).hexdigest()[:40]


def csrf_ok(session_token: str, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(csrf_token(session_token), offered)


async def issue_token(request: web.Request, username: str, kind: str) -> tuple[str, str]:
    """A new token for ``username`` (``kind``: ``bearer`` or ``session``) and its expiry."""
    now = utc_now()
    ttl = request.app[CONFIG].identity.admin_token_ttl_s
    token = secrets.token_urlsafe(32)
    expires = now_iso(now + timedelta(seconds=ttl))
    await request.app[DATABASE].run(
        users.store_token, token_hash(token), username, expires, now_iso(now), kind
    )
    return token, expires


def session_cookie(request: web.Request) -> str | None:
    """The board session token the browser sent, if any."""
    value = request.cookies.get(COOKIE)
    return value if value and len(value) <= 256 else None


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(request.app[CONFIG].identity.admin_token_ttl_s),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


async def end_session(request: web.Request, response: web.StreamResponse) -> None:
    """Log the board session out: the token is deleted, the cookie cleared."""
    token = session_cookie(request)
    if token is not None:
        await request.app[DATABASE].run(users.drop_token, token_hash(token))
    response.del_cookie(COOKIE, path="/")
