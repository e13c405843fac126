"""The heartbeat's part in updates: keep the kiosk's update report, answer an update offer.

21,390 kiosks beat every 30 s, so this costs next to nothing when nothing changes:

* the report (``Heartbeat.update``) and the version the kiosk runs are written to
  ``kiosk_updates`` only when they differ from what this process last knew of the kiosk
  (one upsert, inside the heartbeat's own database call); what a process knows is re-read
  after :data:`SEEN_TTL_S`, in case another process wrote since;
* the layers (which rollout sets which kiosk's version) are read at most every
  :data:`LAYERS_TTL_S` per process; an admin's change through this process is seen at once,
  through another within that time;
* an offer is made when the kiosk's layer offers a version (its wave is open) other than the
  one it runs, and the kiosk has not failed that version (``failed`` or ``rolled_back``):
  a bad release is never retried in a loop. A ``failed`` the kiosk will try again
  (``UpdateReport.retry``: an interrupted download, a full disk) is no verdict on the
  release: it is offered again. Halted and cancelled rollouts offer nothing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from core import wire
from server.releases.evaluate import COMMIT_EVAL_S, evaluate, is_failure
from server.releases.layers import Layer, Layers, load_layers, winning
from server.storage.connection import Connection
from server.storage.db import Database

LAYERS_TTL_S = 5.0
SEEN_TTL_S = 300.0
WHEEL_PATH = "/v1/device/releases/{version}/wheel"


@dataclass(frozen=True)
class Stored:
    """A kiosk's ``kiosk_updates`` row as this process last knew it."""

    running: str | None = None
    version: str | None = None
    state: str | None = None
    detail: str | None = None
    retry: bool = False


@dataclass
class ReleaseCache:
    """Per process and database: the layers and what is stored of each kiosk's updates."""

    layers: Layers = field(default_factory=dict)
    layers_at: float = float("-inf")
    seen: dict[str, tuple[Stored, float]] = field(default_factory=dict)
    evaluated: dict[int, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current_layers(self, conn: Connection) -> Layers:
        """The layers, read again when older than :data:`LAYERS_TTL_S`."""
        if time.monotonic() - self.layers_at > LAYERS_TTL_S:
            self.layers = load_layers(conn)
            self.layers_at = time.monotonic()
        return self.layers

    def invalidate(self) -> None:
        """Forget the layers (a rollout changed through this process)."""
        self.layers_at = float("-inf")

    def due(self, rollout_id: int, failure: bool) -> bool:
        """Whether a final report should evaluate the rollout now: failures always, commits
        at most every :data:`COMMIT_EVAL_S`."""
        now = time.monotonic()
        with self.lock:
            if not failure and now - self.evaluated.get(rollout_id, -1e9) < COMMIT_EVAL_S:
                return False
            self.evaluated[rollout_id] = now
            return True


_CACHES: dict[str, ReleaseCache] = {}


def cache_for(target: str) -> ReleaseCache:
    """The process's cache for the database ``target`` (tests run many databases)."""
    return _CACHES.setdefault(target, ReleaseCache())


@dataclass(frozen=True)
class BeatResult:
    """The offer for the answer, and the rollout to evaluate after the heartbeat (if any)."""

    offer: wire.UpdateOffer | None = None
    evaluate: int | None = None


def on_heartbeat(
    conn: Connection,
    cache: ReleaseCache,
    device_id: str,
    site: str,
    running: str | None,
    report: wire.UpdateReport | None,
    now: str,
) -> BeatResult:
    """Store what changed of the kiosk's updates and decide its offer (database thread)."""
    stored = _remember(conn, cache, device_id, running, report, now)
    layer = winning(cache.current_layers(conn), device_id, site)
    if layer is None:
        return BeatResult()
    return BeatResult(_offer(layer, device_id, running, stored), _to_evaluate(cache, layer, report))


def _to_evaluate(cache: ReleaseCache, layer: Layer, report: wire.UpdateReport | None) -> int | None:
    """The kiosk's rollout, when its report is a final one about that rollout's version
    (and, for a commit, the rollout was not evaluated a moment ago); a failure the kiosk
    will retry is not final."""
    if report is None or report.version != layer.version or layer.state != "running":
        return None
    failure = is_failure(report.state, report.retry)
    if not failure and report.state != "committed":
        return None
    return layer.rollout_id if cache.due(layer.rollout_id, failure) else None


def _offer(
    layer: Layer, device_id: str, running: str | None, stored: Stored
) -> wire.UpdateOffer | None:
    if running == layer.version or not layer.offers(device_id):
        return None
    if stored.version == layer.version and is_failure(stored.state, stored.retry):
        return None
    return wire.UpdateOffer(
        version=layer.version,
        filename=layer.filename,
        sha256=layer.sha256,
        signature=layer.signature,
        size=layer.size,
        url=WHEEL_PATH.format(version=layer.version),
    )


def _remember(
    conn: Connection,
    cache: ReleaseCache,
    device_id: str,
    running: str | None,
    report: wire.UpdateReport | None,
    now: str,
) -> Stored:
    """The kiosk's row after this heartbeat, written only if it changed."""
    known = cache.seen.get(device_id)
    clock = time.monotonic()
    if known is None or clock - known[1] > SEEN_TTL_S:
        known = (_read(conn, device_id), clock)
    before = known[0]
    after = Stored(
        _text(running) if running is not None else before.running,
        _text(report.version) if report else before.version,
        report.state if report else before.state,
        _text(report.detail) if report else before.detail,
        report.retry if report else before.retry,
    )
    if after != before:
        conn.execute(
            "INSERT INTO kiosk_updates (device_id, running, version, state, detail, retry, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET"
            " running = excluded.running, version = excluded.version, state = excluded.state,"
            " detail = excluded.detail, retry = excluded.retry, at = excluded.at",
            (
                device_id,
                after.running,
                after.version,
                after.state,
                after.detail,
                int(after.retry),
                now,
            ),
        )
    cache.seen[device_id] = (after, known[1])
    return after


def _text(value: str | None) -> str | None:
    """Kiosk text as stored: JSON allows ``\\u0000``, PostgreSQL text holds no NUL."""
    return None if value is None else value.replace("\x00", "\ufffd")


def _read(conn: Connection, device_id: str) -> Stored:
    row = conn.execute(
        "SELECT running, version, state, detail, retry FROM kiosk_updates WHERE device_id = ?",
        (device_id,),
    ).fetchone()
    return Stored() if row is None else Stored(row[0], row[1], row[2], row[3], bool(row[4]))


async def evaluate_after_report(db: Database, rollout_id: int, now: datetime) -> None:
    """Evaluate the rollout a kiosk just reported on; once it is no longer running, this
    process reads the layers again at once, so the next reports (of a wave failing together)
    do not evaluate it again."""
    after = await db.run(evaluate, rollout_id, now)
    if after.state != "running":
        cache_for(db.target).invalidate()
