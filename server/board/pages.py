"""The board's pages under ``/board/``: server-rendered HTML, updated live by a small script.

Who is looking comes from the auth middleware (server/http/auth.py): it sets ``request[USER]``
when the session cookie is valid, and checks the CSRF token of every form post made with it.
A page asked for without a session redirects to the login form. Pages never show another
site's kiosk (``403``), and every page is sent with a Content-Security-Policy that allows
scripts and styles from this server only (server/http/headers.py; the pages have no inline
script or style).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from server.accounts import login, users, websession
from server.accounts.principal import USER, Principal
from server.appkeys import CLOCK, DATABASE
from server.board import api, kiosks, texts
from server.board.kiosks import BOARD_TZ

LOGIN = "/board/login"
STATIC_ROUTE = "board-static"
#: More kiosks than this on one page: the board lists sites first (an admin's whole fleet).
MAX_CARDS = 300
OUTCOMES = ("pass", "check", "nat_expired", "invalid_credential")


def clock(value: Any) -> str:
    """A time as the board shows it: ``HH:MM:SS`` in the board's time zone (China)."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(BOARD_TZ).strftime("%H:%M:%S")


def _context(request: web.Request, page: str, **values: Any) -> dict[str, Any]:
    lang, _ = texts.chosen(request)
    words = texts.TEXTS[lang]
    user = request.get(USER)
    token = websession.session_cookie(request)
    return {
        "t": words,
        "lang": lang,
        "other_lang": "zh-CN" if lang == "en" else "en",
        "texts_json": json.dumps(words, ensure_ascii=False),
        "page": page,
        "user": user,
        "csrf": websession.csrf_token(token) if token and user else "",
        "outcomes": OUTCOMES,
        "failed": False,
        "site": "",
        "asset": lambda name: str(request.app.router[STATIC_ROUTE].url_for(filename=name)),
        **values,
    }


def render(
    request: web.Request, template: str, page: str, status: int = 200, **values: Any
) -> web.Response:
    """A page, with the language cookie when ``?lang=`` chose it (the security headers,
    Content-Security-Policy among them, come from server/http/headers.py)."""
    response = aiohttp_jinja2.render_template(
        template, request, _context(request, page, **values), status=status
    )
    lang, fresh = texts.chosen(request)
    if fresh:
        texts.remember(response, lang)
    return response


def person(request: web.Request) -> Principal:
    """The logged-in person, or a redirect to the login form."""
    if USER not in request:
        raise web.HTTPSeeOther(LOGIN)
    return request[USER]


def by_site_and_gate(kiosks: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """Kiosks (sorted by site, gate) grouped as [(site, [(gate, kiosks)])]."""
    return [
        (site, [(gate, list(at_gate)) for gate, at_gate in groupby(rows, lambda k: k["gate"])])
        for site, rows in groupby(kiosks, lambda k: k["site"])
    ]


def totals(today: dict[str, dict[str, int]]) -> dict[str, int]:
    """Today's decisions per outcome over every kiosk shown."""
    out: dict[str, int] = {}
    for per_kiosk in today.values():
        for outcome, n in per_kiosk.items():
            out[outcome] = out.get(outcome, 0) + n
    return out


async def board(request: web.Request) -> web.Response:
    """``/board/``: every kiosk of the person's sites (or of ``?site=``), per site and gate,
    live; beyond :data:`MAX_CARDS` kiosks, a list of sites to choose from."""
    user = person(request)
    try:
        sites = api.scope(request, user)
    except web.HTTPException as exc:
        return render(request, "error.html", "error", status=exc.status, code=exc.status)
    db = request.app[DATABASE]
    chosen = request.query.get("site", "")
    if not chosen and await db.run(kiosks.count_kiosks, sites) > MAX_CARDS:
        summary = await db.run(kiosks.site_summary, sites, request.app[CLOCK]())
        return render(request, "sites.html", "board", summary=summary)
    state = await api.board_state(request, user)
    return render(
        request,
        "board.html",
        "board",
        site=chosen,
        groups=by_site_and_gate(state["kiosks"]),
        today=state["today"],
        totals=totals(state["today"]),
        recent=state["recent"],
        serials={k["device_id"]: k["serial"] for k in state["kiosks"]},
    )


async def kiosk(request: web.Request) -> web.Response:
    """``/board/kiosks/{device_id}``: one kiosk, its taps today and the remote gate."""
    user = person(request)
    try:
        found = await api.kiosk_state(request, user, request.match_info["device_id"])
    except web.HTTPException as exc:
        return render(request, "error.html", "error", status=exc.status, code=exc.status)
    return render(
        request,
        "kiosk.html",
        "kiosk",
        k=found,
        today={found["device_id"]: found["today"]},
        recent=found["recent"],
        serials={found["device_id"]: found["serial"]},
    )


async def kiosk_card(request: web.Request) -> web.Response:
    """One kiosk's card alone: what the script swaps in when the kiosk's state changes."""
    user = person(request)
    found = await api.kiosk_state(request, user, request.match_info["device_id"])
    return render(
        request, "_card.html", "card", k=found, today={found["device_id"]: found["today"]}
    )


def static_page(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A page whose content the script fetches from the public API (alerts, lookup, audit)."""

    async def handler(request: web.Request) -> web.Response:
        user = person(request)
        sites = sorted(user.sites)
        if user.all_sites:
            sites = await request.app[DATABASE].run(kiosks.site_names)
        return render(request, f"{name}.html", name, sites=sites)

    handler.__doc__ = f"``/board/{name}``"
    return handler


async def login_form(request: web.Request) -> web.Response:
    """``GET /board/login``; someone already logged in goes to the board."""
    if USER in request:
        raise web.HTTPSeeOther("/board/")
    return render(request, "login.html", "login")


async def login_post(request: web.Request) -> web.Response:
    """``POST /board/login``: the password check shared with ``POST /v1/login`` (throttled),
    then a session cookie and a redirect to the board."""
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


async def to_board(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/board/")


ROUTES = [
    web.get("/board", to_board),
    web.get("/board/", board),
    web.get("/board/login", login_form),
    web.post("/board/login", login_post),
    web.post("/board/logout", logout),
    web.get("/board/kiosks/{device_id}", kiosk),
    web.get("/board/kiosks/{device_id}/card", kiosk_card),
    web.get("/board/alerts", static_page("alerts")),
    web.get("/board/lookup", static_page("lookup")),
    web.get("/board/audit", static_page("audit")),
]
