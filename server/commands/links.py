"""Storage of the command channel: which kiosk holds a socket to which process, and the
commands signed for kiosks (table ``kiosk_links``, ``kiosk_commands``; migration 12).

Every function takes a :class:`~server.storage.connection.Connection` and is run through
``Database.run``. Times are ISO-8601 UTC text, command lifetimes unix seconds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec

from core.commands import SignedCommand
from server.events.presence import LINK_STALE_S, iso, mark_down
from server.storage.connection import Connection
from server.storage.db import transaction

#: A process refreshes its links this often ...
REFRESH_S = 10.0
#: ... and a link not refreshed for this long belongs to a dead process: it is swept.
STALE_S = LINK_STALE_S


def iso_ms(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds (an acknowledgement's time)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def link_up(conn: Connection, device_id: str, process: str, link: str, now: datetime) -> bool:
    """Record ``device_id``'s socket on ``process`` (replacing any older link); whether the
    kiosk had been announced down (its ``kiosk_up`` then says ``back``)."""
    with transaction(conn):
        at = iso(now)
        conn.execute(
            "INSERT INTO kiosk_links (device_id, process, link, connected_at, refreshed_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET"
            " process = excluded.process, link = excluded.link,"
            " connected_at = excluded.connected_at, refreshed_at = excluded.refreshed_at",
            (device_id, process, link, at, at),
        )
        cur = conn.execute("DELETE FROM kiosk_down WHERE device_id = ?", (device_id,))
        return cur.rowcount == 1


def link_down(conn: Connection, device_id: str, link: str, now: datetime) -> bool:
    """The socket ``link`` closed: delete it and mark the kiosk down at once; False (nothing
    done) when the kiosk has reconnected meanwhile (its row names a newer link) or was
    already announced down."""
    with transaction(conn):
        cur = conn.execute(
            "DELETE FROM kiosk_links WHERE device_id = ? AND link = ?", (device_id, link)
        )
        if cur.rowcount != 1:
            return False
        return mark_down(conn, device_id, now)


def drop_links(conn: Connection, process: str) -> int:
    """Forget every link of ``process`` without marking anyone down (a clean shutdown: the
    kiosks reconnect elsewhere, and the heartbeat rule catches those that do not)."""
    return conn.execute("DELETE FROM kiosk_links WHERE process = ?", (process,)).rowcount


def refresh_links(conn: Connection, process: str, now: datetime) -> list[str]:
    """Say ``process`` still holds its links; sweep other processes' stale ones. Returns
    the device ids of swept links (their process died: the presence watch judges them by
    their heartbeat from now on)."""
    conn.execute("UPDATE kiosk_links SET refreshed_at = ? WHERE process = ?", (iso(now), process))
    cutoff = iso(now - timedelta(seconds=STALE_S))
    stale = conn.execute(
        "SELECT device_id FROM kiosk_links WHERE refreshed_at < ?", (cutoff,)
    ).fetchall()
    if stale:
        conn.execute("DELETE FROM kiosk_links WHERE refreshed_at < ?", (cutoff,))
    return [str(row[0]) for row in stale]


def linked(conn: Connection, now: datetime) -> set[str]:
    """Device ids holding a live socket to some process (stale rows excluded)."""
    cutoff = iso(now - timedelta(seconds=STALE_S))
    rows = conn.execute(
        "SELECT device_id FROM kiosk_links WHERE refreshed_at >= ?", (cutoff,)
    ).fetchall()
    return {str(row[0]) for row in rows}


def is_linked(conn: Connection, device_id: str, now: datetime) -> bool:
    """Whether ``device_id`` holds a live socket to some process."""
    cutoff = iso(now - timedelta(seconds=STALE_S))
    row = conn.execute(
        "SELECT 1 FROM kiosk_links WHERE device_id = ? AND refreshed_at >= ?",
        (device_id, cutoff),
    ).fetchone()
    return row is not None


def record_command(conn: Connection, cmd: SignedCommand, by: str, reason: str | None) -> None:
    """Keep a signed command: who asked, why, and the signed text (for the heartbeat)."""
    conn.execute(
        "INSERT INTO kiosk_commands (id, device_id, command, by_user, reason, signed,"
        " issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            cmd.id,
            cmd.device_id,
            cmd.command,
            by,
            reason,
            msgspec.json.encode(cmd).decode(),
            cmd.issued_at,
            cmd.expires_at,
        ),
    )


def record_ack(
    conn: Connection, command_id: str, device_id: str, ok: bool, error: str, acked_at: str
) -> tuple[str, str] | None:
    """Store a kiosk's acknowledgement of its own command (first one wins); the command's
    (name, by) or None when no such unacknowledged command was sent to this kiosk."""
    cur = conn.execute(
        "UPDATE kiosk_commands SET acked_at = ?, ok = ?, error = ?"
        " WHERE id = ? AND device_id = ? AND acked_at IS NULL",
        (acked_at, int(ok), error or None, command_id, device_id),
    )
    if cur.rowcount != 1:
        return None
    row = conn.execute(
        "SELECT command, by_user FROM kiosk_commands WHERE id = ?", (command_id,)
    ).fetchone()
    return str(row[0]), str(row[1])


def pending_commands(conn: Connection, device_id: str, now_s: int) -> list[dict[str, object]]:
    """The kiosk's signed commands neither acknowledged nor expired (heartbeat fallback)."""
    rows = conn.execute(
        "SELECT signed FROM kiosk_commands WHERE device_id = ? AND expires_at >= ?"
        " AND acked_at IS NULL ORDER BY issued_at",
        (device_id, now_s),
    ).fetchall()
    return [json.loads(row[0]) for row in rows]
