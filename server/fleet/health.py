"""A kiosk's health in a few words, from its last heartbeat: what the board shows, what
``kiosk provision status`` lists, and what ``kiosk_health`` events carry.

Reader, camera and audio follow the alert rules' verdicts (server/alerts/rules.py), so a
board and the alerts never disagree.
"""

from __future__ import annotations

import json
from typing import Any

from server.alerts import rules

#: The parts of the summary whose change is news for a live board (``kiosk_health``).
NEWS_KEYS = ("reader", "camera", "audio", "clock_trusted", "circuit", "journal_full", "version")


def _parts(status: dict[str, Any]) -> dict[str, str]:
    """Reader, camera and audio by the alert rules' verdicts (server/alerts/rules.py), so the
    board and the alerts never disagree: ``ok``, ``fault``, or ``absent`` (none reported)."""
    verdicts = {**rules.source_verdicts(status), **rules.audio_verdict(status)}
    sources = [s for s in (status.get("reader"), *(status.get("sources") or ())) if s]
    cameras = [s for s in sources if isinstance(s, dict) and ("frames" in s or "fps" in s)]
    fitted = {
        "reader": len(sources) > len(cameras),
        "camera": bool(cameras),
        "audio": "audio_fault" in verdicts,
    }
    return {
        part: "absent" if not fitted[part] else "fault" if verdicts.get(f"{part}_fault") else "ok"
        for part in ("reader", "camera", "audio")
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def health_of(heartbeat: str | None, skew_s: float | None) -> dict[str, Any]:
    """The health summary of a kiosk's last heartbeat as stored (JSON text)."""
    try:
        status = _dict(json.loads(heartbeat) if heartbeat else None)
    except ValueError:
        status = {}
    return health_from(status, skew_s)


def health_from(status: dict[str, Any], skew_s: float | None) -> dict[str, Any]:
    """The health summary of a heartbeat body (device/agent.py status())."""
    journal, circuit = _dict(status.get("journal")), _dict(status.get("circuit"))
    return {
        **_parts(status),
        "clock_trusted": status.get("clock_trusted"),
        "clock_skew_s": skew_s,
        "circuit": circuit.get("state"),
        "journal_backlog": status.get("journal_pending"),
        "journal_full": bool(journal.get("full")),
        "journal_lost": journal.get("lost", 0),
        "version": status.get("version"),
        "uptime_s": status.get("uptime_s"),
    }
