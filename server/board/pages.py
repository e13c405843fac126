"""The board's pages under ``/board/``: server-rendered HTML, updated live by a small script.

Who is looking comes from the auth middleware (server/http/auth.py): it sets ``request[USER]``
when the session cookie is valid, and checks the CSRF token of every form post made with it.
A page asked for without a session redirects to the login form (server/board/signin.py).
Pages never show another site's kiosk (``403``); they have no inline script or style, so the
Content-Security-Policy can allow scripts and styles from this server only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from itertools import groupby
from typing import Any

from aiohttp import web

from server.appkeys import CLOCK, DATABASE
from server.board import api, kiosks, signin, versions
from server.board.render import person, render

#: More kiosks than this on one page: the board lists sites first (an admin's whole fleet).
MAX_CARDS = 300


def by_site_and_gate(found: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """Kiosks (sorted by site, gate) grouped as [(site, [(gate, kiosks)])]."""
    return [
        (site, [(gate, list(at_gate)) for gate, at_gate in groupby(rows, lambda k: k["gate"])])
        for site, rows in groupby(found, lambda k: k["site"])
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
        found = await db.run(versions.site_versions, sites)
        return render(
            request, "sites.html", "board", summary=summary, **await _releases(request, found)
        )
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
        **await _releases(request, versions.of_kiosks(state["kiosks"])),
    )


async def _releases(request: web.Request, found: versions.Versions) -> dict[str, Any]:
    """What the sites' version lines need: versions per site and each site's rollout."""
    rollouts = await request.app[DATABASE].run(versions.site_rollouts, list(found))
    return {"versions": found, "rollouts": rollouts, "version_text": versions.text}


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


async def to_board(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/board/")


ROUTES = [
    web.get("/board", to_board),
    web.get("/board/", board),
    web.get("/board/login", signin.login_form),
    web.post("/board/login", signin.login_post),
    web.post("/board/logout", signin.logout),
    web.get("/board/kiosks/{device_id}", kiosk),
    web.get("/board/kiosks/{device_id}/card", kiosk_card),
    web.get("/board/alerts", static_page("alerts")),
    web.get("/board/lookup", static_page("lookup")),
    web.get("/board/audit", static_page("audit")),
]
