"""What the board knows of kiosks: state and health from the last heartbeat, and today's
taps from the audit trail.

Everything here is a plain read over ``devices`` and ``audit_events``, run in the database
thread (``await db.run(fn, ...)``); online is :mod:`server.events.presence`'s rule (a live
command socket, or a heartbeat within 90 s and not announced down since). A guard's reads
are limited to the sites given (``None``: every site) in SQL, not after the fact.

"Today" is the calendar day in :data:`BOARD_TZ` (China Standard Time, where the gates
are), counted by ``received_at``: the server's own clock, one format, indexed. A tap decided
offline and uploaded after midnight counts on the day it arrived; its ``wall_time`` (the
kiosk's clock) is still what the rows show.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from server.events import presence
from server.fleet.health import health_of
from server.storage.connection import Connection

BOARD_TZ: Final = timezone(timedelta(hours=8), "CST")
RECENT_TAPS: Final = 30

Sites = list[str] | None  # None: every site


def day_start(now: datetime) -> str:
    """Midnight of ``now``'s day in :data:`BOARD_TZ`, as ``received_at`` spells times."""
    local = now.astimezone(BOARD_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    return local.astimezone(UTC).isoformat(timespec="seconds")


def site_filter(sites: Sites, column: str) -> tuple[str, list[Any]]:
    if sites is None:
        return "", []
    if not sites:
        return " AND 1 = 0", []
    return f" AND {column} IN ({', '.join('?' for _ in sites)})", list(sites)


_KIOSKS = (
    "SELECT d.device_id, d.serial, d.site, d.gate, d.location, d.last_seen_at,"
    " d.last_heartbeat, d.clock_skew_s FROM devices d WHERE d.status <> 'revoked'"
)


def _kiosk(row: Any, online: bool) -> dict[str, Any]:
    device_id, serial, site, gate, location, seen, beat, skew = row
    return {
        "device_id": device_id,
        "serial": serial,
        "site": site,
        "gate": gate or "",
        "location": location or "",
        "online": online,
        "last_seen": seen,
        "health": health_of(beat, skew),
    }


def list_kiosks(conn: Connection, sites: Sites, now: datetime) -> list[dict[str, Any]]:
    """The kiosks of ``sites`` with state, health and last tap today, by site, gate, serial."""
    where, params = site_filter(sites, "d.site")
    rows = conn.execute(_KIOSKS + where + " ORDER BY d.site, d.gate, d.serial", params)
    online = presence.online_devices(conn, now)
    kiosks = [_kiosk(row, row[0] in online) for row in rows.fetchall()]
    last = last_taps(conn, sites, day_start(now))
    for kiosk in kiosks:
        kiosk["health"]["last_tap"] = last.get(kiosk["device_id"])
    return kiosks


def site_summary(conn: Connection, sites: Sites, now: datetime) -> list[tuple[str, int, int]]:
    """(site, kiosks, online) per site: the board's overview when one page of cards would
    be too many (an admin's whole fleet)."""
    where, params = site_filter(sites, "site")
    rows = conn.execute(
        "SELECT device_id, site FROM devices WHERE status <> 'revoked'" + where, params
    ).fetchall()
    online = presence.online_devices(conn, now)
    totals: dict[str, list[int]] = {}
    for device_id, site in rows:
        counts = totals.setdefault(str(site), [0, 0])
        counts[0] += 1
        counts[1] += device_id in online
    return [(site, n, up) for site, (n, up) in sorted(totals.items())]


def count_kiosks(conn: Connection, sites: Sites) -> int:
    where, params = site_filter(sites, "site")
    row = conn.execute(
        "SELECT COUNT(*) FROM devices WHERE status <> 'revoked'" + where, params
    ).fetchone()
    return int(row[0])


def site_names(conn: Connection) -> list[str]:
    """Every site with a kiosk (what an admin picks from)."""
    rows = conn.execute("SELECT DISTINCT site FROM devices ORDER BY site").fetchall()
    return [str(row[0]) for row in rows]


def kiosk_site(conn: Connection, device_id: str) -> str | None:
    """The site of a (not revoked) kiosk, or None for an unknown one."""
    row = conn.execute(
        "SELECT site FROM devices WHERE device_id = ? AND status <> 'revoked'", (device_id,)
    ).fetchone()
    return None if row is None else str(row[0])


def one_kiosk(conn: Connection, device_id: str, now: datetime) -> dict[str, Any] | None:
    """A kiosk with its health, today's counts per outcome and its recent taps."""
    row = conn.execute(_KIOSKS + " AND d.device_id = ?", (device_id,)).fetchone()
    if row is None:
        return None
    kiosk = _kiosk(row, presence.kiosk_online(conn, device_id, now))
    since = day_start(now)
    taps = recent_taps(conn, None, since, device_id=device_id)
    kiosk["health"]["last_tap"] = taps[0] if taps else None
    kiosk["today"] = counts(conn, None, since, device_id=device_id).get(device_id, {})
    kiosk["recent"] = taps
    return kiosk


def _decisions(sites: Sites, since: str, device_id: str | None) -> tuple[str, list[Any]]:
    """FROM/WHERE of today's decisions at ``sites`` (or one kiosk)."""
    where, params = site_filter(sites, "d.site")
    sql = (
        " FROM audit_events e JOIN devices d ON d.device_id = e.device_id"
        " WHERE e.kind = 'decision' AND e.received_at >= ?" + where
    )
    args: list[Any] = [since, *params]
    if device_id is not None:
        sql += " AND e.device_id = ?"
        args.append(device_id)
    return sql, args


def counts(
    conn: Connection, sites: Sites, since: str, device_id: str | None = None
) -> dict[str, dict[str, int]]:
    """Decisions since ``since`` per kiosk and outcome."""
    sql, args = _decisions(sites, since, device_id)
    rows = conn.execute(
        "SELECT e.device_id, e.outcome, COUNT(*)" + sql + " GROUP BY e.device_id, e.outcome",
        args,
    ).fetchall()
    out: dict[str, dict[str, int]] = {}
    for kiosk, outcome, n in rows:
        out.setdefault(str(kiosk), {})[str(outcome)] = int(n)
    return out


def _tap(row: Any) -> dict[str, Any]:
    device_id, site, gate, wall_time, outcome, masked_id, offline, detail = row
    try:
        reasons = json.loads(detail).get("reasons") or []
    except (ValueError, AttributeError):
        reasons = []
    return {
        "device_id": device_id,
        "site": site,
        "gate": gate or "",
        "at": wall_time,
        "outcome": outcome,
        "masked_id": masked_id,
        "reasons": [str(r) for r in reasons],
        "offline": bool(offline),
    }


_TAP_COLUMNS = (
    "SELECT e.device_id, d.site, d.gate, e.wall_time, e.outcome, e.masked_id, e.offline, e.detail"
)


def recent_taps(
    conn: Connection,
    sites: Sites,
    since: str,
    device_id: str | None = None,
    limit: int = RECENT_TAPS,
) -> list[dict[str, Any]]:
    """The latest decisions since ``since``, newest first."""
    sql, args = _decisions(sites, since, device_id)
    rows = conn.execute(
        _TAP_COLUMNS + sql + " ORDER BY e.received_at DESC, e.seq DESC LIMIT ?", [*args, limit]
    ).fetchall()
    return [_tap(row) for row in rows]


def last_taps(conn: Connection, sites: Sites, since: str) -> dict[str, dict[str, Any]]:
    """Each kiosk's latest decision since ``since`` (one window query, both backends)."""
    sql, args = _decisions(sites, since, None)
    rows = conn.execute(
        "SELECT device_id, site, gate, wall_time, outcome, masked_id, offline, detail FROM ("
        + _TAP_COLUMNS
        + ", ROW_NUMBER() OVER (PARTITION BY e.device_id"
        " ORDER BY e.received_at DESC, e.seq DESC) AS n" + sql + ") t WHERE n = 1",
        args,
    ).fetchall()
    return {str(row[0]): _tap(row) for row in rows}


def board(conn: Connection, sites: Sites, now: datetime) -> dict[str, Any]:
    """Everything the board page shows at once."""
    since = day_start(now)
    return {
        "kiosks": list_kiosks(conn, sites, now),
        "today": counts(conn, sites, since),
        "recent": recent_taps(conn, sites, since),
    }
