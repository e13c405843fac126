"""What a kiosk's heartbeat says about each alert kind, as plain functions of the status.

:func:`heartbeat_verdicts` answers, per kind the heartbeat has an opinion on, the alert's
detail when it should be open, or ``None`` when it should be clear; a kind the heartbeat
says nothing about (an older kiosk that does not report audio, say) is left out, so its
alert is left as it is. Everything here is cheap: it runs on every heartbeat.

What the kiosk sends is device/agent.py ``Agent.status()``: ``reader`` (the main reader's
health, ``connected``), ``sources`` (the other sources: cameras report ``frames``/``fps``,
readers do not), ``clock_trusted``, ``journal_pending``, ``cache`` and, from kiosks that
report them, ``audio`` (``{"ok": bool, ...}``) and ``cache.snapshot_at`` /
``cache.max_age_s`` (docs/alerts.md "What kiosks report").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from itertools import pairwise
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from server.alerts.settings import AlertSettings

#: A verdict: the open alert's detail, or None for "clear".
Verdicts = dict[str, dict[str, Any] | None]

#: Fields of a source's health that name it in an alert (no counters, no errors).
_NAME_FIELDS = ("backend", "wiring", "source", "url")
_MAX_NAME = 120


def _name(health: Mapping[str, Any]) -> str:
    """What names a source in an alert; a URL without any user or password in it."""
    for field in _NAME_FIELDS:
        value = health.get(field)
        if isinstance(value, str) and value:
            if "@" in value and "://" in value:
                parts = urlsplit(value)
                host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
                value = urlunsplit(parts._replace(netloc=host))
            return value[:_MAX_NAME]
    return "?"


def _is_camera(health: Mapping[str, Any]) -> bool:
    """Camera sources (device/sources/camera.py, qrscan.py) report frames; readers do not."""
    return "frames" in health or "fps" in health


def _is_recording(health: Mapping[str, Any]) -> bool:
    """A camera fed from a file (tests, demos) ends by design: not a fault."""
    return health.get("live") is False


def _down(health: Any) -> bool:
    return isinstance(health, dict) and health.get("connected") is False


def source_verdicts(status: Mapping[str, Any]) -> Verdicts:
    """``reader_fault`` and ``camera_fault`` from ``reader`` and ``sources``."""
    others = [s for s in status.get("sources") or () if isinstance(s, dict)]
    readers = [r for r in (status.get("reader"), *others) if isinstance(r, dict)]
    readers = [r for r in readers if not _is_camera(r)]
    cameras = [c for c in others if _is_camera(c) and not _is_recording(c)]
    verdicts: Verdicts = {}
    if "reader" in status or readers:
        down = sorted({_name(r) for r in readers if _down(r)})
        verdicts["reader_fault"] = {"readers": down} if down else None
    if "sources" in status:
        down = sorted({_name(c) for c in cameras if _down(c)})
        verdicts["camera_fault"] = {"cameras": down} if down else None
    return verdicts


def audio_verdict(status: Mapping[str, Any]) -> Verdicts:
    """``audio_fault`` from ``audio.ok`` (kiosks that do not report audio: no opinion)."""
    audio = status.get("audio")
    if not isinstance(audio, dict) or not isinstance(audio.get("ok"), bool):
        return {}
    if audio["ok"]:
        return {"audio_fault": None}
    error = audio.get("last_error")
    return {"audio_fault": {"error": error[:200] if isinstance(error, str) else None}}


def clock_verdict(status: Mapping[str, Any]) -> Verdicts:
    """``clock_untrusted`` while the kiosk says its clock is not trusted."""
    trusted = status.get("clock_trusted")
    if not isinstance(trusted, bool):
        return {}
    return {"clock_untrusted": None if trusted else {"clock_trusted": False}}


def cache_verdict(status: Mapping[str, Any], now: float) -> Verdicts:
    """``cache_stale`` when the installed site snapshot is older than the kiosk's cache limit.

    ``snapshot_at`` is the snapshot's ``generated_at``, stamped by the server, so its age is
    measured with the server's clock, whatever the kiosk's clock says. A kiosk that loads
    snapshots but never installed one (``snapshot_at`` null) is stale too.
    """
    cache = status.get("cache")
    if not isinstance(cache, dict) or "snapshot_at" not in cache:
        return {}
    limit, at = cache.get("max_age_s"), cache.get("snapshot_at")
    if not isinstance(limit, int | float) or isinstance(limit, bool):
        return {}
    if at is None:
        return {"cache_stale": {"snapshot_at": None, "max_age_s": limit}}
    if not isinstance(at, int | float) or isinstance(at, bool):
        return {}
    age = now - at
    if age > limit:
        return {"cache_stale": {"age_s": round(age), "max_age_s": limit}}
    return {"cache_stale": None}


class Backlogs:
    """The last few ``journal_pending`` values per kiosk, in this process's memory.

    "Growing" needs a history, and keeping it in the database would add a write to every
    heartbeat; a kiosk's heartbeats mostly reach one process (its connection is kept alive),
    and a history lost with a restart only delays the alert by a few beats.
    """

    def __init__(self) -> None:
        self._seen: dict[str, deque[int]] = {}

    def verdict(self, device_id: str, status: Mapping[str, Any], s: AlertSettings) -> Verdicts:
        """``journal_backlog``: raised at ``backlog_threshold``, or when the backlog rose
        over ``backlog_beats`` heartbeats in a row from ``backlog_rising_min``; cleared
        once it is at most half the threshold and no longer rising (no flapping at the
        edge)."""
        pending = status.get("journal_pending")
        if not isinstance(pending, int) or isinstance(pending, bool):
            return {}
        seen = self._seen.get(device_id)
        if seen is None or seen.maxlen != s.backlog_beats:
            seen = self._seen[device_id] = deque(seen or (), maxlen=s.backlog_beats)
        seen.append(pending)
        values = list(seen)
        rising = len(values) == s.backlog_beats and all(b > a for a, b in pairwise(values))
        if pending >= s.backlog_threshold or (rising and pending >= s.backlog_rising_min):
            return {
                "journal_backlog": {
                    "pending": pending,
                    "threshold": s.backlog_threshold,
                    "rising": rising,
                }
            }
        if pending <= s.backlog_threshold // 2 and values[-1] <= values[0]:
            return {"journal_backlog": None}
        return {}

    def forget(self, device_id: str) -> None:
        self._seen.pop(device_id, None)


def heartbeat_verdicts(status: Mapping[str, Any], now: float) -> Verdicts:
    """Every verdict a heartbeat gives except the backlog's (which needs history)."""
    return {
        **source_verdicts(status),
        **audio_verdict(status),
        **clock_verdict(status),
        **cache_verdict(status, now),
    }
