"""Signing in and out of the board: the login form and the session cookie.

The password check is the one ``POST /v1/login`` uses (server/accounts/login.py: throttled
per account and source, the same answer whatever was wrong); a good one gets a session
token in an ``HttpOnly``, ``SameSite=Strict`` cookie (server/accounts/websession.py).
Logging out is a form post, so the auth middleware checks its CSRF token.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from server.accounts import login, users, websession
from server.accounts.principal import USER
from server.appkeys import DATABASE
from server.board.render import LOGIN, render


def cross_site(request: web.Request) -> bool:
    """Whether the browser says the request comes from another site: ``Sec-Fetch-Site``
    (every current browser sends it), else an ``Origin`` naming another host."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return origin is not None and urlsplit(origin).netloc != request.host


async def login_form(request: web.Request) -> web.Response:
    """``GET /board/login``; someone already logged in goes to the board."""
    if USER in request:
        raise web.HTTPSeeOther("/board/")
    return render(request, "login.html", "login")


async def login_post(request: web.Request) -> web.Response:
    """``POST /board/login``: the password check shared with ``POST /v1/login`` (throttled),
    then a session cookie and a redirect to the board. A form posted from another site is
    refused (login CSRF: it would sign this browser in to the other site's account)."""
    if cross_site(request):
        raise web.HTTPForbidden(text="cross-site login refused")
    form = await request.post()
    username = str(form.get("username", ""))[:64]
    password = str(form.get("password", ""))[:1024]
    totp = str(form.get("totp", "")).strip() or None
    verdict = await login.check_password(request, username, password, totp)
    if isinstance(verdict, float):
        return render(request, "login.html", "login", status=429, failed="login_throttled")
    if verdict != "ok":
        return render(request, "login.html", "login", status=401, failed="login_failed")
    if await request.app[DATABASE].run(users.role_and_sites, username) is None:
        return render(request, "login.html", "login", status=401, failed="login_failed")
    token, _ = await websession.issue_token(request, username, "session")
    response = web.HTTPSeeOther("/board/")
    websession.set_session_cookie(request, response, token)
    raise response


async def logout(request: web.Request) -> web.Response:
    """``POST /board/logout`` (the middleware checked its CSRF token): the session ends."""
    response = web.HTTPSeeOther(LOGIN)
    await websession.end_session(request, response)
    raise response
