"""Alert rows: raise, clear, list, acknowledge (migration 13, ``alerts`` and ``alert_acks``).

Plain functions over a :class:`~server.storage.connection.Connection`, run by the server
through ``Database.write`` / ``Database.run``. Raising and clearing answer whether *this*
call changed anything, so that of several processes observing the same fact exactly one
publishes the change and queues its webhook.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from server.alerts import deliveries
from server.storage.connection import Connection

#: The alert kinds (docs/alerts.md says what raises and clears each).
KINDS = (
    "kiosk_offline",
    "reader_fault",
    "camera_fault",
    "audio_fault",
    "journal_backlog",
    "audit_chain",
    "clock_untrusted",
    "cache_stale",
    "invalid_credentials",
)

_NAMES = (
    "id", "site", "device_id", "gate", "kind", "detail", "raised_at", "updated_at",
    "cleared_at", "acked_by", "acked_at", "note",
)  # fmt: skip
_COLUMNS = ", ".join(_NAMES)
#: Letters only: an id can never look like an ID number (the event bus drops those).
_ID_LETTERS = string.ascii_lowercase
_ID_LENGTH = 16


def new_id() -> str:
    """A random alert id (16 letters, 75 bits)."""
    return "".join(secrets.choice(_ID_LETTERS) for _ in range(_ID_LENGTH))


def gate_subject(site: str, gate: str) -> str:
    """The subject of an alert about a gate rather than one kiosk."""
    return f"gate:{site}/{gate}"


@dataclass(frozen=True)
class Alert:
    """One alert as stored."""

    id: str
    site: str
    device_id: str | None
    gate: str
    kind: str
    detail: dict[str, Any]
    raised_at: str
    updated_at: str
    cleared_at: str | None = None
    acked_by: str | None = None
    acked_at: str | None = None
    note: str | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Alert:
        detail = json.loads(row[5]) if row[5] else {}
        return cls(
            str(row[0]), str(row[1]), row[2], str(row[3]), str(row[4]),
            detail if isinstance(detail, dict) else {}, str(row[6]), str(row[7]),
            row[8], row[9], row[10], row[11],
        )  # fmt: skip

    @property
    def subject(self) -> str:
        return self.device_id if self.device_id is not None else gate_subject(self.site, self.gate)

    def event(self) -> dict[str, Any]:
        """What an ``alert_*`` event carries: where, what, and the masked facts."""
        return {
            "id": self.id,
            "kind": self.kind,
            "site": self.site,
            "device_id": self.device_id,
            "gate": self.gate,
            "detail": self.detail,
        }

    def to_json(self) -> dict[str, Any]:
        """The API's view of the alert."""
        return {
            **self.event(),
            "state": "open" if self.cleared_at is None else "cleared",
            "raised_at": self.raised_at,
            "updated_at": self.updated_at,
            "cleared_at": self.cleared_at,
            "acked_by": self.acked_by,
            "acked_at": self.acked_at,
            "note": self.note,
        }


def _detail(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def raise_alert(
    conn: Connection,
    alert: Alert,
    *,
    deliver_at: float | None,
) -> bool:
    """Store ``alert`` unless one of its subject and kind is open already; queue its webhook
    delivery (due at ``deliver_at``, unix seconds; None: the site has no webhook).
    Whether this call raised it."""
    cur = conn.execute(
        "INSERT INTO alerts (id, subject, kind, site, device_id, gate, detail, raised_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            alert.id, alert.subject, alert.kind, alert.site, alert.device_id, alert.gate,
            _detail(alert.detail), alert.raised_at, alert.updated_at,
        ),
    )  # fmt: skip
    if cur.rowcount != 1:
        return False
    if deliver_at is not None:
        deliveries.queue(conn, alert.id, "raised", alert.site, deliver_at)
    return True


def clear_alert(
    conn: Connection, subject: str, kind: str, at: str, *, deliver_at: float | None
) -> Alert | None:
    """Clear the open alert of ``subject`` and ``kind``; the cleared alert if this call
    cleared it (None: none was open, or another process cleared it first)."""
    row = conn.execute(
        "UPDATE alerts SET cleared_at = ?, updated_at = ?"
        " WHERE subject = ? AND kind = ? AND cleared_at IS NULL"
        f" RETURNING {_COLUMNS}",
        (at, at, subject, kind),
    ).fetchone()
    if row is None:
        return None
    alert = Alert.from_row(row)
    if deliver_at is not None:
        deliveries.queue(conn, alert.id, "cleared", alert.site, deliver_at)
    return alert


def raise_or_touch(
    conn: Connection, alert: Alert, *, deliver_at: float | None
) -> tuple[bool, Alert]:
    """Raise ``alert``, or add its counts to the open one of its subject and kind (an audit
    trouble that happens again while its alert is open). (raised by this call, the alert)."""
    if raise_alert(conn, alert, deliver_at=deliver_at):
        return True, alert
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM alerts WHERE subject = ? AND kind = ? AND cleared_at IS NULL",
        (alert.subject, alert.kind),
    ).fetchone()
    if row is None:  # cleared between the two statements (another process): raise anew
        return raise_alert(conn, alert, deliver_at=deliver_at), alert
    current = Alert.from_row(row)
    merged = _add_counts(current.detail, alert.detail)
    conn.execute(
        "UPDATE alerts SET detail = ?, updated_at = ? WHERE id = ?",
        (_detail(merged), alert.updated_at, current.id),
    )
    return False, current


def _add_counts(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` over ``old``, integer counts added up."""
    out = dict(old)
    for key, value in new.items():
        prior = out.get(key)
        both_counts = type(value) is int and type(prior) is int
        out[key] = prior + value if both_counts else value
    return out


def open_alerts(conn: Connection) -> list[Alert]:
    """Every open alert (the per-process view of what is open is refreshed from this)."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE cleared_at IS NULL").fetchall()
    return [Alert.from_row(r) for r in rows]


def orphaned(conn: Connection) -> list[Alert]:
    """Open alerts of kiosks revoked or removed since: nobody will ever clear them
    from the kiosk's facts again."""
    rows = conn.execute(
        f"SELECT {', '.join('a.' + name for name in _NAMES)} FROM alerts AS a"
        " LEFT JOIN devices AS d ON d.device_id = a.device_id"
        " WHERE a.cleared_at IS NULL AND a.device_id IS NOT NULL"
        " AND (d.device_id IS NULL OR d.status = 'revoked')"
    ).fetchall()
    return [Alert.from_row(r) for r in rows]


def offline_unraised(conn: Connection) -> list[tuple[str, str, str, str]]:
    """(device id, site, gate, since) of the active kiosks announced down
    (``kiosk_down``, server/events/presence.py) without an open ``kiosk_offline`` alert."""
    rows = conn.execute(
        "SELECT k.device_id, d.site, d.gate, k.since FROM kiosk_down AS k"
        " JOIN devices AS d ON d.device_id = k.device_id WHERE d.status = 'active'"
        " AND NOT EXISTS (SELECT 1 FROM alerts AS a WHERE a.subject = k.device_id"
        " AND a.kind = 'kiosk_offline' AND a.cleared_at IS NULL)"
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2] or ""), str(r[3])) for r in rows]


def offline_back(conn: Connection) -> list[Alert]:
    """Open ``kiosk_offline`` alerts of kiosks no longer announced down and heard from
    (a heartbeat, or a command link refreshed) since the alert was raised."""
    rows = conn.execute(
        f"SELECT {', '.join('a.' + name for name in _NAMES)} FROM alerts AS a"
        " JOIN devices AS d ON d.device_id = a.device_id"
        " WHERE a.kind = 'kiosk_offline' AND a.cleared_at IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM kiosk_down AS k WHERE k.device_id = a.device_id)"
        " AND (d.last_seen_at > a.raised_at OR EXISTS (SELECT 1 FROM kiosk_links AS l"
        " WHERE l.device_id = a.device_id AND l.refreshed_at > a.raised_at))"
    ).fetchall()
    return [Alert.from_row(r) for r in rows]


def get_alert(conn: Connection, alert_id: str) -> Alert | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    return None if row is None else Alert.from_row(row)


def list_alerts(
    conn: Connection,
    state: Literal["open", "all"],
    sites: Sequence[str] | None,
    limit: int,
) -> list[Alert]:
    """Latest first; ``sites`` None: every site."""
    where: list[str] = []
    params: list[Any] = []
    if state == "open":
        where.append("cleared_at IS NULL")
    if sites is not None:
        if not sites:
            return []
        where.append(f"site IN ({', '.join('?' for _ in sites)})")
        params.extend(sites)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM alerts{clause} ORDER BY raised_at DESC, id LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [Alert.from_row(r) for r in rows]


def acknowledge(conn: Connection, alert_id: str, username: str, note: str, at: str) -> Alert | None:
    """Record who acknowledged the alert, when and why (every acknowledgement is kept in
    ``alert_acks``, numbered; the alert row holds the latest). None: no such alert."""
    row = conn.execute(
        f"UPDATE alerts SET acked_by = ?, acked_at = ?, note = ? WHERE id = ? RETURNING {_COLUMNS}",
        (username, at, note, alert_id),
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        "INSERT INTO alert_acks (alert_id, n, acked_by, acked_at, note)"
        " SELECT ?, COALESCE(MAX(n), 0) + 1, ?, ?, ? FROM alert_acks WHERE alert_id = ?",
        (alert_id, username, at, note, alert_id),
    )
    return Alert.from_row(row)


def acks(conn: Connection, alert_id: str) -> list[tuple[str, str, str]]:
    """(who, when, note) of every acknowledgement of an alert, oldest first."""
    rows = conn.execute(
        "SELECT acked_by, acked_at, note FROM alert_acks WHERE alert_id = ? ORDER BY n",
        (alert_id,),
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def add_invalid_taps(
    conn: Connection, site: str, gate: str, bucket: int, taps: int, since_bucket: int
) -> int:
    """Count ``taps`` invalid-credential taps at a gate in ``bucket``; the gate's total from
    ``since_bucket`` on (the rule's window)."""
    conn.execute(
        "INSERT INTO alert_invalid_taps (site, gate, bucket, taps) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (site, gate, bucket) DO UPDATE SET"
        " taps = alert_invalid_taps.taps + excluded.taps",
        (site, gate, bucket, taps),
    )
    return invalid_taps(conn, site, gate, since_bucket)


def invalid_taps(conn: Connection, site: str, gate: str, since_bucket: int) -> int:
    row = conn.execute(
        "SELECT COALESCE(SUM(taps), 0) FROM alert_invalid_taps"
        " WHERE site = ? AND gate = ? AND bucket >= ?",
        (site, gate, since_bucket),
    ).fetchone()
    return int(row[0]) if row else 0


def purge_invalid_taps(conn: Connection, before_bucket: int) -> int:
    """Forget buckets no window reaches any more."""
    return conn.execute(
        "DELETE FROM alert_invalid_taps WHERE bucket < ?", (before_bucket,)
    ).rowcount
