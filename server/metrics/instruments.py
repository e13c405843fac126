"""The server's process-local metrics: what the hot paths count, as cheaply as possible.

Verify latency by outcome, each source's latency, errors and staleness, and audit ingest are
counted where they happen (server/verify, server/audit/ingestion.py) through the small
meters here; no database work and no lock beyond prometheus-client's own. What the database
knows (kiosks online, alerts open, kiosks' own counters) is read at scrape time instead
(server/metrics/fleet.py).

The metrics are made on first use, in the process that uses them: with ``--workers N`` that
is a worker, after the fork, once :func:`server.metrics.multiproc.value_store_ready` has sent
their values to the shared directory. Meters keep their labelled children, so counting costs
a dictionary lookup and prometheus-client's own update.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from server.metrics.multiproc import value_store_ready

#: The registry of this process's own metrics (single-process exposition reads it).
LOCAL = CollectorRegistry(auto_describe=True)

#: Seconds: the verify decision and one source lookup (sources time out at 0.3 s by default).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: A source's last-good timestamp is written at most this often (it is a gauge, not a count).
LAST_OK_EVERY_S = 1.0


@dataclass(frozen=True)
class Instruments:
    """Every process-local metric, made once per process by :func:`instruments`."""

    verify_seconds: Histogram
    source_seconds: Histogram
    source_errors: Counter
    source_stale: Counter
    source_last_ok: Gauge
    source_failing: Gauge
    audit_batches: Counter
    audit_events: Counter
    audit_conflicts: Counter
    audit_chain_breaks: Counter
    worker_cpu: Gauge
    worker_rss: Gauge


@cache
def instruments() -> Instruments:
    """This process's metrics (made on the first call; no ``*_created`` series: they double
    the output and no dashboard here reads them)."""
    value_store_ready()
    disable_created_metrics()  # type: ignore[no-untyped-call]
    reg = LOCAL
    return Instruments(
        verify_seconds=Histogram(
            "siheyi_verify_seconds",
            "Time to decide one POST /v1/verify (sources and policy), by outcome",
            ["outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        ),
        source_seconds=Histogram(
            "siheyi_source_seconds",
            "Time one source lookup took (local sources answered together share one time)",
            ["source"],
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        ),
        source_errors=Counter(
            "siheyi_source_errors",
            "Source lookups that failed, by kind (timeout or failed)",
            ["source", "error"],
            registry=reg,
        ),
        source_stale=Counter(
            "siheyi_source_stale",
            "Answers given from a source's last-known value because it failed",
            ["source"],
            registry=reg,
        ),
        source_last_ok=Gauge(
            "siheyi_source_last_ok_timestamp_seconds",
            "Unix time of the source's latest good answer (staleness: time() minus this)",
            ["source"],
            multiprocess_mode="max",
            registry=reg,
        ),
        source_failing=Gauge(
            "siheyi_source_failing",
            "1 while the source's latest lookup failed (in any worker)",
            ["source"],
            multiprocess_mode="livemax",
            registry=reg,
        ),
        audit_batches=Counter(
            "siheyi_audit_batches",
            "POST /v1/audit batches stored (resends included)",
            ["result"],
            registry=reg,
        ),
        audit_events=Counter(
            "siheyi_audit_events",
            "Audit events received: stored (new) or duplicate (a resend)",
            ["result"],
            registry=reg,
        ),
        audit_conflicts=Counter(
            "siheyi_audit_conflicts",
            "Audit events received with the (epoch, seq) of a different stored event",
            [],
            registry=reg,
        ),
        audit_chain_breaks=Counter(
            "siheyi_audit_chain_breaks",
            "Audit events whose hash chain link to the previous event is broken",
            [],
            registry=reg,
        ),
        worker_cpu=Gauge(
            "siheyi_worker_cpu_seconds",
            "CPU time used by each server process (refreshed every few seconds)",
            [],
            multiprocess_mode="liveall",
            registry=reg,
        ),
        worker_rss=Gauge(
            "siheyi_worker_resident_memory_bytes",
            "Resident memory of each server process (refreshed every few seconds)",
            [],
            multiprocess_mode="liveall",
            registry=reg,
        ),
    )


class VerifyMeter:
    """Counts decided verifies by outcome (one per :class:`~server.verify.service.Verifier`)."""

    def __init__(self) -> None:
        self._metric = instruments().verify_seconds
        self._children: dict[str, Histogram] = {}

    def observe(self, outcome: str, seconds: float) -> None:
        child = self._children.get(outcome)
        if child is None:
            child = self._children[outcome] = self._metric.labels(outcome)
        child.observe(seconds)


class SourceMeter:
    """One source's latency, errors and staleness (one per wrapped source)."""

    def __init__(self, source: str) -> None:
        made = instruments()
        self.source = source
        self._seconds = made.source_seconds.labels(source)
        self._errors = made.source_errors
        self._error_children: dict[str, Counter] = {}
        self._stale = made.source_stale.labels(source)
        self._last_ok = made.source_last_ok.labels(source)
        self._failing = made.source_failing.labels(source)
        self._failing.set(0)
        self._last_ok_at = 0.0

    def took(self, seconds: float) -> None:
        self._seconds.observe(seconds)

    def answered(self) -> None:
        """A good answer (``ok`` or ``missing``): the source is up and fresh now."""
        now = time.time()
        if now - self._last_ok_at >= LAST_OK_EVERY_S:
            self._last_ok_at = now
            self._last_ok.set(now)

    def failed(self, error: str, *, stale: bool) -> None:
        """A failed lookup: ``timeout`` or anything else (``failed``); ``stale`` when the
        last-known value was given instead."""
        kind = "timeout" if error == "timeout" else "failed"
        child = self._error_children.get(kind)
        if child is None:
            child = self._error_children[kind] = self._errors.labels(self.source, kind)
        child.inc()
        if stale:
            self._stale.inc()

    def failing(self, now_failing: bool) -> None:
        """The source started failing or recovered (called on the change only)."""
        self._failing.set(1 if now_failing else 0)


def count_audit_batch(stored: int, duplicates: int, conflicts: int, chain_breaks: int) -> None:
    """One ``POST /v1/audit`` batch's outcome."""
    made = instruments()
    made.audit_batches.labels("new" if stored else "resend").inc()
    if stored:
        made.audit_events.labels("stored").inc(stored)
    if duplicates:
        made.audit_events.labels("duplicate").inc(duplicates)
    if conflicts:
        made.audit_conflicts.inc(conflicts)
    if chain_breaks:
        made.audit_chain_breaks.inc(chain_breaks)
