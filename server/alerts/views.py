"""``GET /v1/guard/alerts`` and ``POST /v1/guard/alerts/{id}/ack``: a guard's alerts.

A guard sees and acknowledges the alerts of the assigned sites only; asking for another
site's (``?site=``, or acknowledging its alert) is a ``403``, never an empty answer. Admins
see every site. An acknowledgement needs a note; who, when and the note are kept
(``alert_acks``), logged and published as ``alert_acked``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from aiohttp import web
from msgspec import Meta, Struct

from server.accounts.principal import require_role, require_site
from server.alerts import service, store
from server.alerts.service import iso
from server.appkeys import CLOCK, DATABASE
from server.errors import BadRequest
from server.http.bodies import read_body, refuse_personal_numbers
from server.http.middleware import json_error
from server.http.operations import Operation
from server.http.views import json_response as _answer

log = logging.getLogger(__name__)

#: Alerts one list answers at most (latest first).
DEFAULT_LIMIT = 200
MAX_LIMIT = 1000


class AckRequest(Struct):
    """Why the guard acknowledges the alert (kept with who and when)."""

    note: Annotated[str, Meta(min_length=1, max_length=500, pattern=r"\S")]


class AlertInfo(Struct):
    """One alert: where, what, when raised and cleared, who acknowledged it and why."""

    id: str
    kind: str
    site: str
    device_id: str | None
    gate: str
    detail: dict[str, Any]
    state: Literal["open", "cleared"]
    raised_at: str
    updated_at: str
    cleared_at: str | None
    acked_by: str | None
    acked_at: str | None
    note: str | None


class AlertList(Struct):
    """The caller's alerts, latest raised first."""

    alerts: list[AlertInfo]


def _state(request: web.Request) -> Literal["open", "all"]:
    value = request.query.get("state", "open")
    if value not in ("open", "all"):
        raise BadRequest("state: must be open or all")
    return "open" if value == "open" else "all"


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit: must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


async def list_alerts(request: web.Request) -> web.Response:
    """``GET /v1/guard/alerts?state=open|all&site=&limit=``: admins and auditors every site,
    guards their own (acknowledging stays with admins and guards)."""
    user = require_role(request, "admin", "guard", "auditor")
    state, limit = _state(request), _limit(request)
    site = request.query.get("site")
    sites: list[str] | None
    if site:
        require_site(user, site)
        sites = [site]
    else:
        sites = None if user.all_sites else sorted(user.sites)
    alerts = await request.app[DATABASE].run(store.list_alerts, state, sites, limit)
    return _answer({"alerts": [a.to_json() for a in alerts]})


async def ack_alert(request: web.Request) -> web.Response:
    """``POST /v1/guard/alerts/{id}/ack {"note"}``: the alert, acknowledged."""
    user = require_role(request, "admin", "guard")
    alert_id = request.match_info["id"]
    db = request.app[DATABASE]
    found = await db.run(store.get_alert, alert_id)
    if found is None:
        raise json_error(web.HTTPNotFound, "not_found", "no such alert")
    require_site(user, found.site)
    body = await read_body(request, AckRequest)
    refuse_personal_numbers(body.note, "note")  # stored and shown: no ID or phone numbers
    at = iso(request.app[CLOCK]())
    acked = await db.write(store.acknowledge, alert_id, user.username, body.note, at)
    if acked is None:
        raise json_error(web.HTTPNotFound, "not_found", "no such alert")
    log.info(
        "alert %s (%s at %s/%s) acknowledged by %s",
        acked.id, acked.kind, acked.site, acked.gate, user.username,
    )  # fmt: skip
    event = {**acked.event(), "acked_by": user.username, "acked_at": at}
    service.emit(request.app, "alert_acked", event)
    return _answer(acked.to_json())


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/v1/guard/alerts",
        list_alerts,
        "user",
        "Alerts of the caller's sites, latest first",
        response=AlertList,
        errors=(400, 401, 403),
        query=(
            ("state", "open (default) or all"),
            ("site", "one of the caller's sites (403 for another)"),
            ("limit", f"alerts at most, 1-{MAX_LIMIT} (default {DEFAULT_LIMIT})"),
        ),
    ),
    Operation(
        "POST",
        "/v1/guard/alerts/{id}/ack",
        ack_alert,
        "user",
        "Acknowledge an alert with a note (kept with who and when)",
        request=AckRequest,
        response=AlertInfo,
        errors=(400, 401, 403, 404),
    ),
)
