"""The board's JSON API: ``GET /v1/guard/kiosks`` and ``GET /v1/guard/kiosks/{device_id}``.

Public (in the OpenAPI document): scripts read the same state the board shows. A guard gets
the kiosks of the assigned sites; another site's kiosk is a ``403``, an unknown one a ``404``
(the site check comes after the lookup, so a guard learns nothing of another site's kiosk
ids beyond that they exist).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.accounts.principal import Principal, current_user, require_site
from server.appkeys import CLOCK, DATABASE
from server.board import kiosks
from server.board.models import KioskDetail, KioskList
from server.http.middleware import json_error
from server.http.operations import Operation
from server.http.views import json_response

SITE_QUERY = (("site", "only this site (a guard: one of the assigned sites, else 403)"),)


def scope(request: web.Request, user: Principal) -> kiosks.Sites:
    """The sites a query is limited to: ``?site=`` if given (403 unless the caller sees it),
    else the caller's sites (None: every site)."""
    site = request.query.get("site")
    if site:
        require_site(user, site)
        return [site]
    return None if user.all_sites else sorted(user.sites)


async def board_state(request: web.Request, user: Principal) -> dict[str, Any]:
    """The whole board for ``user``: kiosks, today's counts, recent taps."""
    now = request.app[CLOCK]()
    return await request.app[DATABASE].run(kiosks.board, scope(request, user), now)


async def kiosk_state(request: web.Request, user: Principal, device_id: str) -> dict[str, Any]:
    """One kiosk for ``user``, or a ``404`` / ``403``."""
    db = request.app[DATABASE]
    site = await db.run(kiosks.kiosk_site, device_id)
    if site is None:
        raise json_error(web.HTTPNotFound, "not_found", "no such kiosk")
    require_site(user, site)
    found = await db.run(kiosks.one_kiosk, device_id, request.app[CLOCK]())
    if found is None:  # revoked between the two reads
        raise json_error(web.HTTPNotFound, "not_found", "no such kiosk")
    return found


async def list_kiosks(request: web.Request) -> web.Response:
    """``GET /v1/guard/kiosks``: the caller's kiosks with state and health."""
    user = current_user(request)
    now = request.app[CLOCK]()
    found = await request.app[DATABASE].run(kiosks.list_kiosks, scope(request, user), now)
    return json_response({"kiosks": found})


async def get_kiosk(request: web.Request) -> web.Response:
    """``GET /v1/guard/kiosks/{device_id}``: one kiosk, today's counts, recent taps."""
    user = current_user(request)
    return json_response(await kiosk_state(request, user, request.match_info["device_id"]))


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/v1/guard/kiosks",
        list_kiosks,
        "user",
        "The caller's kiosks: online, last seen and health (reader, camera, audio, clock,"
        " circuit, journal backlog, version, last tap today)",
        response=KioskList,
        query=SITE_QUERY,
        errors=(403,),
    ),
    Operation(
        "GET",
        "/v1/guard/kiosks/{device_id}",
        get_kiosk,
        "user",
        "One kiosk: health, today's decisions per outcome and its recent taps (masked ids)",
        response=KioskDetail,
        errors=(403, 404),
    ),
)
