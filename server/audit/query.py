"""Reading the audit trail: filtered, newest first, a page at a time (issue 12, part 6).

Order: ``received_at`` (the server's clock when the batch arrived), then ``device_id``,
``epoch`` and ``seq``, all descending. Why the server's clock and not the kiosk's
``wall_time``: events arrive with a ``received_at`` at or after every stored one, so a new
event sorts *before* any page already handed out and paging on never meets it; a kiosk that
was offline for a day sends events whose ``wall_time`` lies in the middle of the trail, and an
order on it would slip them into pages already read. The time filters (``since``/``until``)
are on ``received_at`` too, for the same reason and because it is one indexed text column in
one format; each event carries its ``wall_time`` (and whether the kiosk trusted its clock).

Pagination is by key, not offset: the cursor is the last event's ``(received_at, device_id,
epoch, seq)`` (unique: the table's key within a time), encoded opaquely, and the next page is
what sorts after it. A page costs an index walk from the cursor (migration 15), however deep.

Storage only: SQL and rows. The HTTP side (parameters, who may see what) is
server/audit/read_views.py.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Events per page: the default and the most one request may ask for.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

Cursor = tuple[str, str, str, int]

#: What an event shows, in this order (the CSV export's columns). Masked ids only: the
#: pseudonym (a keyed hash that links a person's taps) stays in the database.
FIELDS: tuple[str, ...] = (
    "received_at", "site", "gate", "device_id", "epoch", "seq", "wall_time", "clock_trusted",
    "kind", "outcome", "prompt", "masked_id", "offline", "cache_age_s", "latency_ms",
    "boot_id", "chain_ok", "flagged", "detail", "prev_hash", "hash",
)  # fmt: skip

_SELECT = (
    "SELECT e.received_at, d.site, d.gate, e.device_id, e.epoch, e.seq, e.wall_time,"
    " e.clock_trusted, e.kind, e.outcome, e.prompt, e.masked_id, e.offline, e.cache_age_s,"
    " e.latency_ms, e.boot_id, e.chain_ok, e.flagged, e.detail, e.prev_hash, e.hash"
    " FROM audit_events AS e LEFT JOIN devices AS d ON d.device_id = e.device_id"
)
_ORDER = " ORDER BY e.received_at DESC, e.device_id DESC, e.epoch DESC, e.seq DESC LIMIT ?"
_BOOLEAN = frozenset({"clock_trusted", "offline"})


@dataclass(frozen=True)
class Filters:
    """Which events: every field None means no condition on it.

    ``sites`` None is every site (and events of kiosks no longer registered); a tuple is
    those sites only (a guard's are always forced to a tuple, possibly empty).
    ``since`` is inclusive, ``until`` exclusive, both in ``received_at``'s form.
    """

    sites: tuple[str, ...] | None = None
    gate: str | None = None
    device: str | None = None
    since: str | None = None
    until: str | None = None
    outcome: str | None = None
    offline: bool | None = None
    kind: str | None = None


def page_query(filters: Filters, after: Cursor | None, limit: int) -> tuple[str, tuple[Any, ...]]:
    """The statement and parameters for one page: ``limit`` events after ``after``."""
    where, params = _conditions(filters)
    if after is not None:
        where.append("(e.received_at, e.device_id, e.epoch, e.seq) < (?, ?, ?, ?)")
        params.extend(after)
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + _ORDER
    return sql, (*params, limit)


def _conditions(f: Filters) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if f.sites is not None:
        if not f.sites:
            where.append("1 = 0")  # a guard with no site sees nothing
        else:
            # ``d.site || ''``: no index on the site, so the plan walks the trail's order
            # (SQLite otherwise starts from the site's kiosks and sorts all their events
            # for every page); a guard's sites are most of what their kiosks see anyway.
            where.append(f"d.site || '' IN ({', '.join('?' * len(f.sites))})")
            params.extend(f.sites)
    for column, value in (
        ("d.gate", f.gate),
        ("e.device_id", f.device),
        ("e.outcome", f.outcome),
        ("e.kind", f.kind),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if f.offline is not None:
        where.append("e.offline = ?")
        params.append(int(f.offline))
    if f.since is not None:
        where.append("e.received_at >= ?")
        params.append(f.since)
    if f.until is not None:
        where.append("e.received_at < ?")
        params.append(f.until)
    return where, params


def event(row: Sequence[Any]) -> dict[str, Any]:
    """One row of :func:`page_query` as the API shows it."""
    out = dict(zip(FIELDS, row, strict=True))
    for name in _BOOLEAN:
        out[name] = bool(out[name])
    out["detail"] = json.loads(out["detail"]) if out["detail"] else {}
    return out


def cursor_of(event: dict[str, Any]) -> Cursor:
    """The position just after ``event`` (one of :func:`event`'s answers)."""
    return (event["received_at"], event["device_id"], event["epoch"], int(event["seq"]))


def encode_cursor(cursor: Cursor) -> str:
    """An opaque, URL-safe text for ``cursor``: clients pass it back, never build one."""
    raw = json.dumps(list(cursor), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """The cursor :func:`encode_cursor` made; ValueError for anything else."""
    if len(text) > 512:
        raise ValueError("too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("not a cursor this server made") from exc
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(v, str) for v in value[:3])
        or not isinstance(value[3], int)
        or isinstance(value[3], bool)
    ):
        raise ValueError("not a cursor this server made")
    return (value[0], value[1], value[2], value[3])


def device_site(rows: Sequence[Sequence[Any]]) -> str | None:
    """The site of :data:`DEVICE_SITE`'s answer, None for a device not registered."""
    return str(rows[0][0]) if rows else None


DEVICE_SITE = "SELECT site FROM devices WHERE device_id = ?"
