"""The audit trail for people: ``GET /v1/audit/events``, ``/v1/audit/export`` and
``/v1/audit/devices/{device_id}/chain`` (issue 12, part 6).

Who: admins and auditors read every site; a guard only the assigned sites. A guard's
filters are forced to those sites, and asking by name for another site, or for a kiosk of
another site (or one that does not exist: a guard cannot tell the two apart), is a ``403``,
never an empty answer, so a scoping mistake is loud. Every query parameter is checked and a
bad one is a ``400`` naming it; unknown or repeated parameters are refused too, so a typo
(``?outcom=pass``) never silently widens an export.

Reads run on the database's threads (``Database.run``), a page at a time on the indexes of
migration 15 (point reads through ``Database.fetch``). The export streams (chunked) page
after page with the same keyset query, so its memory does not grow with the trail; the chain
check hashes each page off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web
from multidict import MultiMapping

from core.audit import KINDS
from core.outcomes import ALL_OUTCOMES
from core.wire_audit import AuditEventPage, ChainReport
from server.accounts.principal import Principal, Role, require_role, require_site
from server.appkeys import DATABASE
from server.audit import chain, export, query
from server.errors import BadRequest
from server.http.middleware import json_error
from server.http.operations import Operation
from server.storage.connection import Connection
from server.storage.db import Database

log = logging.getLogger(__name__)

READERS: tuple[Role, ...] = ("admin", "auditor", "guard")
#: Events per read while exporting.
EXPORT_PAGE = 1000

FILTERS: tuple[tuple[str, str], ...] = (
    ("site", "only this site (a guard: one of the assigned sites)"),
    ("gate", "only kiosks at this gate"),
    ("device", "only this kiosk (device_id)"),
    ("since", "received at or after this ISO 8601 time (with offset, or Z)"),
    ("until", "received before this ISO 8601 time (with offset, or Z)"),
    ("outcome", "pass, check, nat_expired, invalid_credential or fault"),
    ("offline", "true: decided offline from the cache; false: online"),
    ("kind", "decision, fault, guard or system"),
)
PAGING: tuple[tuple[str, str], ...] = (
    ("cursor", "the previous page's next"),
    ("limit", f"events per page, 1-{query.MAX_LIMIT} (default {query.DEFAULT_LIMIT})"),
)
FORMAT: tuple[tuple[str, str], ...] = (("format", "csv (default) or json"),)


# -- parameters -------------------------------------------------------------------------------


def single_values(
    params: MultiMapping[str], allowed: tuple[tuple[str, str], ...]
) -> dict[str, str]:
    """The query as one value per name; 400 for an unknown name or one given twice. An empty
    value is no filter (``?site=&outcome=check``), as on the other guard routes."""
    names = {name for name, _ in allowed}
    values: dict[str, str] = {}
    for name, value in params.items():
        if name not in names:
            raise BadRequest(f"{name[:40]}: unknown parameter")
        if name in values:
            raise BadRequest(f"{name}: given more than once")
        if value:
            values[name] = value
    return values


def _text(name: str, value: str, max_len: int = 100) -> str:
    printable = value.isprintable() and value.encode("utf-8", "replace").decode() == value
    if not value or len(value) > max_len or not printable:
        raise BadRequest(f"{name}: 1-{max_len} printable characters")
    return value


def _time(name: str, value: str) -> str:
    """An ISO 8601 time with an offset as ``received_at`` is written (UTC, to the second)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}: not an ISO 8601 time") from None
    if parsed.utcoffset() is None:
        raise BadRequest(f"{name}: needs a UTC offset (Z or +08:00)")
    try:
        return parsed.astimezone(UTC).isoformat(timespec="seconds")
    except OverflowError:  # 9999-12-31T23:00-05:00
        raise BadRequest(f"{name}: out of range") from None


def _choice(name: str, value: str, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise BadRequest(f"{name}: one of {', '.join(sorted(allowed))}")
    return value


def _format(value: str) -> str:
    return _choice("format", value, frozenset(export.MEDIA_TYPES))


def _flag(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise BadRequest(f"{name}: true or false")


def parse_filters(values: Mapping[str, str]) -> query.Filters:
    """The filters asked for, checked (sites as asked: :func:`scoped` applies the caller's)."""
    get = values.get
    since = _time("since", get("since", "")) if "since" in values else None
    until = _time("until", get("until", "")) if "until" in values else None
    if since is not None and until is not None and until <= since:
        raise BadRequest("until: must be after since")
    return query.Filters(
        sites=(_text("site", values["site"]),) if "site" in values else None,
        gate=_text("gate", values["gate"]) if "gate" in values else None,
        device=_text("device", values["device"], 64) if "device" in values else None,
        since=since,
        until=until,
        outcome=_choice("outcome", values["outcome"], ALL_OUTCOMES)
        if "outcome" in values
        else None,
        offline=_flag("offline", values["offline"]) if "offline" in values else None,
        kind=_choice("kind", values["kind"], KINDS) if "kind" in values else None,
    )


def parse_paging(values: Mapping[str, str]) -> tuple[query.Cursor | None, int]:
    """``cursor`` and ``limit``, checked."""
    after = None
    if "cursor" in values:
        try:
            after = query.decode_cursor(values["cursor"])
        except ValueError as exc:
            raise BadRequest(f"cursor: {exc}") from None
    limit = query.DEFAULT_LIMIT
    if "limit" in values:
        text = values["limit"]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= query.MAX_LIMIT:
            raise BadRequest(f"limit: a whole number from 1 to {query.MAX_LIMIT}")
        limit = int(text)
    return after, limit


# -- who sees what ----------------------------------------------------------------------------


def _forbidden_site() -> web.HTTPException:
    return json_error(web.HTTPForbidden, "forbidden_site", "not one of your sites")


async def _device_site(db: Database, device_id: str) -> str | None:
    return query.device_site(await db.fetch(query.DEVICE_SITE, (device_id,)))


async def scoped(db: Database, user: Principal, filters: query.Filters) -> query.Filters:
    """``filters`` within what ``user`` may see: a 403 for another site or its kiosk."""
    if filters.sites is not None:
        require_site(user, filters.sites[0])
    if filters.device is not None and not user.all_sites:
        site = await _device_site(db, filters.device)
        if site is None or not user.sees_site(site):
            raise _forbidden_site()
    if filters.sites is None and not user.all_sites:
        return replace(filters, sites=tuple(sorted(user.sites)))
    return filters


def read_rows(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Rows of a page, read off the event loop: a selective filter (one site's rare outcome)
    may walk much of the trail before a page is full, 0.2 s per 200,000 events on SQLite,
    which ``Database.fetch`` would spend on the loop itself (it reads inline on SQLite)."""
    return list(conn.execute(sql, params).fetchall())


async def _read_page(
    db: Database, filters: query.Filters, after: query.Cursor | None, limit: int
) -> tuple[list[dict[str, Any]], query.Cursor | None]:
    """Up to ``limit`` events after ``after`` and the cursor past them, None at the end."""
    sql, params = query.page_query(filters, after, limit + 1)
    rows = await db.run(read_rows, sql, params)
    events = [query.event(row) for row in rows[:limit]]
    more = len(rows) > limit
    return events, query.cursor_of(events[-1]) if more else None


# -- handlers ---------------------------------------------------------------------------------


async def events(request: web.Request) -> web.Response:
    """``GET /v1/audit/events``: one page of the filtered trail, newest first."""
    user = require_role(request, *READERS)
    values = single_values(request.query, FILTERS + PAGING)
    filters = parse_filters(values)
    after, limit = parse_paging(values)
    db = request.app[DATABASE]
    filters = await scoped(db, user, filters)
    page, following = await _read_page(db, filters, after, limit)
    body = {"events": page, "next": query.encode_cursor(following) if following else None}
    return web.json_response(body, dumps=_dumps)


def _dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode("utf-8")


async def export_events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/audit/export``: every matching event as a CSV or JSON attachment, streamed."""
    user = require_role(request, *READERS)
    values = single_values(request.query, FILTERS + FORMAT)
    fmt: export.Format = "json" if _format(values.get("format", "csv")) == "json" else "csv"
    filters = parse_filters(values)
    db = request.app[DATABASE]
    filters = await scoped(db, user, filters)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{export.MEDIA_TYPES[fmt]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="audit-events-{stamp}.{fmt}"',
            "Cache-Control": "no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    encoder = export.encoder(fmt)
    await response.write(encoder.start())
    after: query.Cursor | None = None
    sent = 0
    while True:
        page, after = await _read_page(db, filters, after, EXPORT_PAGE)
        await response.write(encoder.page(page))
        sent += len(page)
        if after is None:
            break
    await response.write(encoder.end())
    await response.write_eof()
    log.info("audit export by %s (%s): %d event(s) as %s", user.username, user.role, sent, fmt)
    return response


async def device_chain(request: web.Request) -> web.Response:
    """``GET /v1/audit/devices/{device_id}/chain``: the kiosk's chain, recomputed."""
    user = require_role(request, *READERS)
    device_id = _text("device_id", request.match_info["device_id"], 64)
    db = request.app[DATABASE]
    site = await _device_site(db, device_id)
    if not user.all_sites and (site is None or not user.sees_site(site)):
        raise _forbidden_site()
    progress = await db.fetch(chain.PROGRESS, (device_id,))
    if site is None and not progress:
        raise json_error(web.HTTPNotFound, "not_found", f"no kiosk {device_id} and no audit of it")
    check = chain.ChainCheck(device_id, progress, await db.fetch(chain.CONFLICTS, (device_id,)))
    after: tuple[str, int] | None = None
    while True:
        sql, params = chain.page_query(device_id, after)
        rows = await db.run(read_rows, sql, params)
        if not rows:
            break
        await asyncio.to_thread(check.feed, rows)
        after = chain.last_position(rows)
    report = check.report()
    if not report["ok"]:
        log.warning(
            "audit chain of %s checked by %s: %d break(s), %d conflict(s), %d missing",
            device_id, user.username, len(report["breaks"]), report["conflicts"], report["missing"],
        )  # fmt: skip
    return web.json_response(report, dumps=_dumps)


# -- routes -------------------------------------------------------------------------------------

#: ``auth`` "user": any logged-in person; these handlers check the role and the sites.
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/v1/audit/events",
        events,
        "user",
        "The audit trail, filtered, newest first, a page at a time (admin, auditor; a guard:"
        " own sites)",
        response=AuditEventPage,
        errors=(403,),
        query=FILTERS + PAGING,
    ),
    Operation(
        "GET",
        "/v1/audit/export",
        export_events,
        "user",
        "Every matching audit event as a CSV or JSON attachment, streamed",
        errors=(403,),
        query=FILTERS + FORMAT,
        media_type="text/csv",
    ),
    Operation(
        "GET",
        "/v1/audit/devices/{device_id}/chain",
        device_chain,
        "user",
        "A kiosk's audit chain recomputed over the stored events: breaks, conflicts, missing",
        response=ChainReport,
        errors=(403, 404),
    ),
)
