"""Rollouts in SQL: start one, read them, halt, resume or cancel one.

A rollout offers one release to one layer (the fleet, a site, a device) in waves; the rules
that open the next wave or halt it are in :mod:`server.releases.evaluate`. Every change runs
in the caller's transaction under the rollout lock, so two server processes (or an admin and
a heartbeat) never both move one rollout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from core.errors import SettingError
from core.releases import check_version
from core.wire_releases import RolloutInfo, RolloutRequest, RolloutState, Scope
from server.releases import store
from server.releases.errors import Conflict, NotFound, ReleaseProblem
from server.releases.layers import set_layer
from server.releases.waves import check_waves
from server.storage.connection import Connection
from server.storage.db import lock

LOCK = "siheyi:rollouts"
_COLUMNS = (
    "id, version, scope, target, waves, wave, failure_threshold, soak_s, state, started_at,"
    " started_by, wave_started_at, ended_at, halted_reason"
)


def _info(row: Sequence[Any]) -> RolloutInfo:
    return RolloutInfo(
        id=int(row[0]),
        version=str(row[1]),
        scope=cast(Scope, row[2]),
        target=str(row[3]),
        waves=[float(w) for w in json.loads(row[4])],
        wave=int(row[5]),
        failure_threshold=float(row[6]),
        soak_s=float(row[7]),
        state=cast(RolloutState, row[8]),
        started_at=str(row[9]),
        started_by=str(row[10]),
        wave_started_at=str(row[11]),
        ended_at=row[12],
        halted_reason=row[13],
    )


def find(conn: Connection, rollout_id: int) -> RolloutInfo:
    """One rollout, or :class:`NotFound`."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
    if row is None:
        raise NotFound(f"no rollout {rollout_id}")
    return _info(row)


def list_rollouts(conn: Connection, limit: int = 100) -> list[RolloutInfo]:
    """The latest rollouts, newest first."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM rollouts ORDER BY id DESC LIMIT ?", (limit,))
    return [_info(row) for row in rows.fetchall()]


def _target(conn: Connection, scope: str, target: str) -> str:
    """The layer's target as stored: '' for the fleet, a known site, a device id."""
    target = target.strip()
    if scope == "fleet":
        return ""
    if not target:
        raise ReleaseProblem(f"target: a {scope} rollout needs a {scope}")
    if scope == "site":
        row = conn.execute("SELECT 1 FROM sites WHERE site = ?", (target,)).fetchone()
        if row is None:
            raise NotFound(f"no site {target!r}")
        return target
    row = conn.execute(
        "SELECT device_id FROM devices WHERE device_id = ? OR serial = ?"
        " ORDER BY CASE WHEN device_id = ? THEN 0 ELSE 1 END LIMIT 1",
        (target, target, target),
    ).fetchone()
    if row is None:
        raise NotFound(f"no device with serial or id {target!r}")
    return str(row[0])


def start(conn: Connection, request: RolloutRequest, by: str, now: str) -> RolloutInfo:
    """Start a rollout (in the caller's transaction); the rollout it replaces in its layer,
    if still running or halted, is cancelled."""
    try:
        check_version(request.version)
    except SettingError as exc:
        raise ReleaseProblem(f"version: {exc}") from exc
    if any(ord(c) < 32 or ord(c) == 127 for c in request.target):
        raise ReleaseProblem("target: must be printable")
    lock(conn, LOCK)
    store.require(conn, request.version)
    target = _target(conn, request.scope, request.target)
    try:
        waves = [100.0] if request.scope == "device" else check_waves(request.waves)
    except SettingError as exc:
        raise ReleaseProblem(f"waves: {exc}") from exc
    row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM rollouts").fetchone()
    rollout_id = int(row[0]) + 1
    conn.execute(
        f"INSERT INTO rollouts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, ?, ?, 'running', ?, ?, ?,"
        " NULL, NULL)",
        (rollout_id, request.version, request.scope, target, json.dumps(waves),
         request.failure_threshold, request.soak_s, now, by, now),
    )  # fmt: skip
    replaced = set_layer(conn, request.scope, target, rollout_id)
    if replaced is not None:
        conn.execute(
            "UPDATE rollouts SET state = 'cancelled', ended_at = ?, halted_reason = ?"
            " WHERE id = ? AND state IN ('running', 'halted')",
            (now, f"replaced by rollout {rollout_id}", replaced),
        )
    return find(conn, rollout_id)


#: What each verb may change: from these states, to that state.
_MOVES: dict[str, tuple[tuple[str, ...], str]] = {
    "halt": (("running",), "halted"),
    "resume": (("halted",), "running"),
    "cancel": (("running", "halted"), "cancelled"),
}


def move(conn: Connection, rollout_id: int, verb: str, now: str, reason: str = "") -> RolloutInfo:
    """``halt``, ``resume`` or ``cancel`` a rollout (in the caller's transaction).

    Resuming keeps the wave the rollout was in, and its clock (soak) starts again; the
    kiosks that failed this version are still not offered it again."""
    lock(conn, LOCK)
    found = find(conn, rollout_id)
    sources, state = _MOVES[verb]
    if found.state not in sources:
        raise Conflict(f"rollout {rollout_id} is {found.state}: it cannot {verb}")
    if verb == "halt":
        conn.execute(
            "UPDATE rollouts SET state = 'halted', halted_reason = ? WHERE id = ?",
            (reason or "halted by an admin", rollout_id),
        )
    elif verb == "resume":
        conn.execute(
            "UPDATE rollouts SET state = 'running', halted_reason = NULL, wave_started_at = ?"
            " WHERE id = ?",
            (now, rollout_id),
        )
    else:
        conn.execute(
            "UPDATE rollouts SET state = ?, ended_at = ? WHERE id = ?", (state, now, rollout_id)
        )
    return find(conn, rollout_id)
