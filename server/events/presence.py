"""``kiosk_down`` events: a kiosk whose heartbeats stopped is announced once, by one process.

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


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def newly_down(conn: Connection, now: datetime) -> list[tuple[str, str, str]]:
    """(device id, site, gate) of the active kiosks this call found gone quiet first."""
    cutoff = _iso(now - timedelta(seconds=DOWN_AFTER_S))
    quiet = conn.execute(
        "SELECT d.device_id, d.site, d.gate FROM devices d WHERE d.status = 'active'"
        " AND d.last_seen_at IS NOT NULL AND d.last_seen_at < ?"
        " AND NOT EXISTS (SELECT 1 FROM kiosk_down k WHERE k.device_id = d.device_id)",
        (cutoff,),
    ).fetchall()
    claimed = []
    for device_id, site, gate in quiet:
        cur = conn.execute(
            "INSERT INTO kiosk_down (device_id, since) VALUES (?, ?)"
            " ON CONFLICT (device_id) DO NOTHING",
            (device_id, _iso(now)),
        )
        if cur.rowcount == 1:
            claimed.append((str(device_id), str(site), str(gate or "")))
    return claimed


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
