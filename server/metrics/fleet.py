"""What the database knows, read once per scrape: kiosks online and offline per site, open
alerts, people's sessions, command links, and the kiosks' own counters per site.

:func:`read_snapshot` is one ``db.run`` of a few grouped ``SELECT``\\s; :class:`SnapshotCache`
keeps its answer a few seconds and shares one read among concurrent scrapes, so any number of
scrapers cannot load the database. :func:`families` turns a snapshot into metric families;
being computed by the worker that answers, they are counted once whatever ``--workers``.

Device session tokens are stateless (an HMAC, server/fleet/sessions.py): nothing in storage
says which are in use, so the session gauges are people's tokens and the kiosks' held
command sockets (each needs a live session).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from core.outcomes import ALL_OUTCOMES
from core.wire import PROMPT_LATENCY_BOUNDS_S
from server.events.presence import LINK_STALE_S, iso, online_devices
from server.metrics.kiosks import SiteTotals, site_totals
from server.storage.connection import Connection
from server.storage.db import Database

log = logging.getLogger(__name__)

#: A snapshot is read again after this many seconds at most once, however many scrape.
CACHE_S = 5.0


@dataclass(frozen=True)
class FleetSnapshot:
    """The database's facts at one moment."""

    kiosks: dict[tuple[str, str], int] = field(default_factory=dict)  # (site, state) → n
    alerts: dict[tuple[str, str], int] = field(default_factory=dict)  # (site, kind) → n
    people_sessions: dict[str, int] = field(default_factory=dict)  # kind → n
    command_links: int = 0
    sites: dict[str, SiteTotals] = field(default_factory=dict)


def read_snapshot(conn: Connection, now: datetime) -> FleetSnapshot:
    """Every scrape-time fact in one call on the database thread."""
    online = online_devices(conn, now)
    kiosks: dict[tuple[str, str], int] = {}
    for device_id, site in conn.execute(
        "SELECT device_id, site FROM devices WHERE status <> 'revoked'"
    ).fetchall():
        key = (str(site), "online" if device_id in online else "offline")
        kiosks[key] = kiosks.get(key, 0) + 1
    alerts = {
        (str(site), str(kind)): int(n)
        for site, kind, n in conn.execute(
            "SELECT site, kind, COUNT(*) FROM alerts WHERE cleared_at IS NULL GROUP BY site, kind"
        ).fetchall()
    }
    people = {
        str(kind): int(n)
        for kind, n in conn.execute(
            "SELECT kind, COUNT(*) FROM admin_tokens WHERE expires_at > ? GROUP BY kind",
            (iso(now),),
        ).fetchall()
    }
    links = conn.execute(
        "SELECT COUNT(*) FROM kiosk_links WHERE refreshed_at >= ?",
        (iso(now - timedelta(seconds=LINK_STALE_S)),),
    ).fetchone()
    return FleetSnapshot(kiosks, alerts, people, int(links[0]), site_totals(conn))


class SnapshotCache:
    """The latest snapshot, read again at most every ``ttl_s``; concurrent callers share
    one read. A failed read answers None (the scrape still gives the process metrics)."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime],
        ttl_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db, self._clock, self._monotonic = db, clock, monotonic
        self._ttl_s = CACHE_S if ttl_s is None else ttl_s
        self._value: FleetSnapshot | None = None
        self._at = float("-inf")
        self._pending: asyncio.Future[FleetSnapshot | None] | None = None
        self.reads = 0

    async def get(self) -> FleetSnapshot | None:
        if self._value is not None and self._monotonic() - self._at < self._ttl_s:
            return self._value
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._read())
        return await asyncio.shield(self._pending)

    async def _read(self) -> FleetSnapshot | None:
        try:
            self.reads += 1
            value = await self._db.run(read_snapshot, self._clock())
        except Exception:
            log.warning("metrics: reading the fleet snapshot failed", exc_info=True)
            return None
        finally:
            self._pending = None
        self._value, self._at = value, self._monotonic()
        return value


def families(snapshot: FleetSnapshot | None) -> Iterator[Metric]:
    """The snapshot's metric families (only ``siheyi_metrics_database_up 0`` without one)."""
    up = GaugeMetricFamily(
        "siheyi_metrics_database_up", "1 when this scrape could read the database"
    )
    up.add_metric([], 0 if snapshot is None else 1)
    yield up
    if snapshot is None:
        return
    yield from _fleet(snapshot)
    yield from _kiosk_counters(snapshot.sites)


def _fleet(snapshot: FleetSnapshot) -> Iterator[Metric]:
    kiosks = GaugeMetricFamily(
        "siheyi_kiosks",
        "Kiosks (not revoked) online or offline, by site (the board's presence rule)",
        labels=["site", "state"],
    )
    sites = {site for site, _ in snapshot.kiosks}
    for site in sorted(sites):
        for state in ("online", "offline"):
            kiosks.add_metric([site, state], snapshot.kiosks.get((site, state), 0))
    yield kiosks
    alerts = GaugeMetricFamily(
        "siheyi_alerts_open",
        "Alerts raised and not cleared, by site and kind",
        labels=["site", "kind"],
    )
    for (site, kind), n in sorted(snapshot.alerts.items()):
        alerts.add_metric([site, kind], n)
    yield alerts
    people = GaugeMetricFamily(
        "siheyi_people_sessions",
        "Unexpired tokens of people: bearer (scripts, CLI) or cookie (board sessions)",
        labels=["kind"],
    )
    for kind in sorted({"bearer", "cookie", *snapshot.people_sessions}):
        people.add_metric([kind], snapshot.people_sessions.get(kind, 0))
    yield people
    yield GaugeMetricFamily(
        "siheyi_command_links",
        "Kiosks holding their command socket (each on a live session)",
        value=snapshot.command_links,
    )


def _kiosk_counters(sites: dict[str, SiteTotals]) -> Iterator[Metric]:
    taps = CounterMetricFamily(
        "siheyi_kiosk_taps",
        "Taps the kiosks decided, by site and outcome",
        labels=["site", "outcome"],
    )
    offline = CounterMetricFamily(
        "siheyi_kiosk_offline_decisions",
        "Taps the kiosks decided on their own (server unreachable), by site",
        labels=["site"],
    )
    errors = CounterMetricFamily(
        "siheyi_kiosk_reader_errors",
        "Reader errors the kiosks counted (a source lost or not starting, a card unread), by site",
        labels=["site"],
    )
    latency = HistogramMetricFamily(
        "siheyi_kiosk_prompt_latency_seconds",
        "From the tap to the start of the spoken prompt, on the kiosks, by site",
        labels=["site"],
    )
    backlog = GaugeMetricFamily(
        "siheyi_kiosk_journal_backlog",
        "Journal events the kiosks have not uploaded yet (as last reported), by site",
        labels=["site"],
    )
    for site, totals in sorted(sites.items()):
        counts = totals.counts
        for outcome in sorted(ALL_OUTCOMES):
            taps.add_metric([site, outcome], counts.get(f"taps.{outcome}", 0.0))
        offline.add_metric([site], counts.get("offline_decisions", 0.0))
        errors.add_metric([site], counts.get("reader_errors", 0.0))
        latency.add_metric([site], _buckets(counts), counts.get("latency_sum", 0.0))
        backlog.add_metric([site], totals.backlog)
    yield from (taps, offline, errors, latency, backlog)


def _buckets(counts: dict[str, float]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs from the per-bucket counts."""
    out: list[tuple[str, float]] = []
    running = 0.0
    for i, bound in enumerate(PROMPT_LATENCY_BOUNDS_S):
        running += counts.get(f"latency.{i}", 0.0)
        out.append((repr(float(bound)), running))
    running += counts.get(f"latency.{len(PROMPT_LATENCY_BOUNDS_S)}", 0.0)
    out.append(("+Inf", running))
    return out
