"""Logging in: ``POST /v1/login`` for scripts, and the password check the board's login form
and ``POST /v1/admin/login`` share.

Every attempt passes the database-backed throttle per account and source first
(server/http/loginguard.py: backoff, then lockout of that key for up to an hour) and only then
costs argon2 work; every refusal reads the same whether the name, the password or the
one-time code was wrong.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from aiohttp import web

from core.wire_admin import LoginAnswer, LoginRequest, UserLoginAnswer
from server.accounts import passwords, users, websession
from server.appkeys import DATABASE, LOGIN_THROTTLE
from server.http.bodies import read_body
from server.http.middleware import json_error
from server.http.operations import Operation
from server.http.ratelimit import overloaded
from server.http.views import json_response

log = logging.getLogger(__name__)

Verdict = Literal["ok", "refused"] | float  # a float: throttled, retry after that many seconds


async def check_password(
    request: web.Request, username: str, password: str, totp: str | None
) -> Verdict:
    """Whether these credentials log in, after the throttle; failures are counted."""
    throttle = request.app[LOGIN_THROTTLE]
    source = request.remote or "-"
    db = request.app[DATABASE]
    wait = await throttle.wait(db, username, source)
    if wait > 0:
        return wait
    stored, secret = await db.run(passwords.login_facts, username)
    ok = await asyncio.to_thread(passwords.password_ok, stored or passwords.DUMMY_HASH, password)
    ok = ok and stored is not None
    if ok and secret is not None:
        ok = await db.run(passwords.use_code, username, secret, totp)
    if not ok:
        await throttle.failed(db, username, source)
        log.warning("login failed for %r from %s", username[:64], source)
        return "refused"
    await throttle.succeeded(db, username, source)
    return "ok"


def refused() -> web.HTTPException:
    return json_error(
        web.HTTPUnauthorized, "unauthenticated", "wrong user name, password or one-time code"
    )


async def _bearer_token(request: web.Request) -> UserLoginAnswer | web.Response:
    """Check the body's credentials and issue a bearer token, or the ``429`` to send."""
    body = await read_body(request, LoginRequest)
    verdict = await check_password(request, body.username, body.password, body.totp)
    if isinstance(verdict, float):
        return overloaded(verdict, "login")
    if verdict != "ok":
        raise refused()
    found = await request.app[DATABASE].run(users.role_and_sites, body.username)
    if found is None:  # deleted between the check and now
        raise refused()
    token, expires = await websession.issue_token(request, body.username, "bearer")
    log.info("%s %s logged in", found[0], body.username)
    return UserLoginAnswer(token, found[0], list(found[1]), expires)


async def login(request: web.Request) -> web.StreamResponse:
    """``POST /v1/login``: ``{username, password, totp?}`` → a bearer token with the
    account's role and sites."""
    answer = await _bearer_token(request)
    return answer if isinstance(answer, web.Response) else json_response(answer)


async def admin_login(request: web.Request) -> web.StreamResponse:
    """``POST /v1/admin/login``: the same login, answered ``{token, expires_at}`` as before
    roles existed; the token opens ``/v1/admin/*`` only for an admin."""
    answer = await _bearer_token(request)
    if isinstance(answer, web.Response):
        return answer
    return json_response(LoginAnswer(answer.token, answer.expires_at))


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/v1/login",
        login,
        "none",
        "Log in (admin, guard or auditor): a bearer token with the account's role and sites",
        request=LoginRequest,
        response=UserLoginAnswer,
        errors=(401, 429),
    ),
)
