"""Rendering a board page: the template context every page shares (words, language, the
person, the CSRF token, asset URLs) and the time format of the board.

The security headers, Content-Security-Policy among them, come from server/http/headers.py
for every answer under ``/board``; this module only adds the language cookie.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from server.accounts import websession
from server.accounts.principal import USER, Principal
from server.board import texts
from server.board.kiosks import BOARD_TZ

LOGIN = "/board/login"
STATIC_ROUTE = "board-static"
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
        "lang_link": str(request.rel_url.update_query(lang="zh-CN" if lang == "en" else "en")),
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
    """A page, with the language cookie when ``?lang=`` chose it."""
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
