"""Whether a kiosk is online, and ``kiosk_down`` events announced once, by one process.

A kiosk is **online** when it holds its command socket (``kiosk_links``, kept by
server/commands: its close marks the kiosk down at once, pings find a vanished one within
30 s) or, the fallback, when it was heard from (``last_seen_at``, its heartbeat) within
:data:`DOWN_AFTER_S` and has not been announced down since (:func:`online_devices`).

Every process watches (every :data:`WATCH_EVERY_S`) for active kiosks last seen more than
:data:`DOWN_AFTER_S` ago — three missed heartbeats at the default 30 s. Announcing is a
claim: the process whose ``INSERT`` into ``kiosk_down`` lands publishes the event, so N
processes announce a kiosk once, not N times. The kiosk's next heartbeat deletes the row
(:func:`back_up`) and its ``kiosk_up`` event then says ``"back": true``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiohttp import web

from server.appkeys import CLOCK, DATABASE
from server.storage.connection import Connection

log = logging.getLogger(__name__)

DOWN_AFTER_S = 90.0
WATCH_EVERY_S = 10.0


def iso(moment: datetime) -> str:
    """A moment as the ISO-8601 UTC text the presence tables hold."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


#: A command link not refreshed by its process for this long is dead (server/commands/links).
LINK_STALE_S = 45.0

_LINKED = (
    "EXISTS (SELECT 1 FROM kiosk_links l WHERE l.device_id = d.device_id AND l.refreshed_at >= ?)"
)
_HEARD = (
    "(d.last_seen_at IS NOT NULL AND d.last_seen_at >= ?"
    " AND NOT EXISTS (SELECT 1 FROM kiosk_down k WHERE k.device_id = d.device_id))"
)


def online_devices(conn: Connection, now: datetime) -> set[str]:
    """The device ids of the kiosks online now: linked, or heard from lately and not
    announced down since (one statement, for the board's kiosk list)."""
    rows = conn.execute(
        f"SELECT d.device_id FROM devices d WHERE {_LINKED} OR {_HEARD}", _cutoffs(now)
    ).fetchall()
    return {str(row[0]) for row in rows}


def kiosk_online(conn: Connection, device_id: str, now: datetime) -> bool:
    """Whether one kiosk is online (:func:`online_devices`' rule)."""
    row = conn.execute(
        f"SELECT 1 FROM devices d WHERE d.device_id = ? AND ({_LINKED} OR {_HEARD})",
        (device_id, *_cutoffs(now)),
    ).fetchone()
    return row is not None


async def kiosks_online(app: web.Application) -> set[str]:
    """:func:`online_devices` now, through the app's database (the board's one call)."""
    return await app[DATABASE].run(online_devices, app[CLOCK]())


def _cutoffs(now: datetime) -> tuple[str, str]:
    return (
        iso(now - timedelta(seconds=LINK_STALE_S)),
        iso(now - timedelta(seconds=DOWN_AFTER_S)),
    )


def mark_down(conn: Connection, device_id: str, now: datetime) -> bool:
    """Announce ``device_id`` down now (its socket closed); False if it already was."""
    cur = conn.execute(
        "INSERT INTO kiosk_down (device_id, since) VALUES (?, ?)"
        " ON CONFLICT (device_id) DO NOTHING",
        (device_id, iso(now)),
    )
    return cur.rowcount == 1


def newly_down(conn: Connection, now: datetime) -> list[tuple[str, str, str]]:
    """(device id, site, gate) of the active kiosks this call found gone quiet first: no
    heartbeat for :data:`DOWN_AFTER_S` and no live command socket."""
    link_cutoff, cutoff = _cutoffs(now)
    quiet = conn.execute(
        "SELECT d.device_id, d.site, d.gate FROM devices d WHERE d.status = 'active'"
        " AND d.last_seen_at IS NOT NULL AND d.last_seen_at < ?"
        f" AND NOT {_LINKED}"
        " AND NOT EXISTS (SELECT 1 FROM kiosk_down k WHERE k.device_id = d.device_id)",
        (cutoff, link_cutoff),
    ).fetchall()
    return [
        (str(device_id), str(site), str(gate or ""))
        for device_id, site, gate in quiet
        if mark_down(conn, str(device_id), now)
    ]


def back_up(conn: Connection, device_id: str) -> bool:
    """The kiosk was heard from: whether it had been announced down."""
    cur = conn.execute("DELETE FROM kiosk_down WHERE device_id = ?", (device_id,))
    return cur.rowcount == 1


async def watch(app: web.Application, publish: Callable[..., None]) -> None:
    """Announce kiosks that went quiet, until cancelled; a failing database is retried."""
    while True:
        await asyncio.sleep(WATCH_EVERY_S)
        try:
            down = await app[DATABASE].run(newly_down, app[CLOCK]())
        except Exception as exc:
            log.warning("kiosk presence watch failed: %s", exc)
            continue
        for device_id, site, gate in down:
            publish(app, "kiosk_down", device_id=device_id, site=site, gate=gate)
            await _observe(app, device_id, site, gate)


async def _observe(app: web.Application, device_id: str, site: str, gate: str) -> None:
    """Tell the alerts (imported here: server.alerts publishes through server.events)."""
    from server.alerts.hooks import observe_presence

    try:
        await observe_presence(app, device_id, site, gate, False)
    except Exception:
        log.exception("offline alert for %s failed", device_id)
