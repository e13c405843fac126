"""One scrape's text: this process's (or every worker's) counters, the database's facts,
and process statistics, in the Prometheus text format.

With ``--workers N`` the counters come from every worker's files (prometheus-client's
``MultiProcessCollector``); otherwise from this process's registry, plus prometheus-client's
process collector (``process_*``, exact for a single process). Each worker refreshes its
own CPU and memory gauges (``siheyi_worker_*``, a ``pid`` label with several workers) every
:data:`WORKER_STATS_EVERY_S`, so a scrape of any worker shows all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from server.metrics.fleet import FleetSnapshot, families
from server.metrics.instruments import LOCAL, instruments
from server.metrics.multiproc import directory

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WORKER_STATS_EVERY_S = 5.0

_PROCESS = ProcessCollector(registry=None)


class _Fixed(Collector):
    """Metric families computed before the scrape is rendered."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def render(snapshot: FleetSnapshot | None) -> bytes:
    """The whole scrape."""
    refresh_worker_stats()
    registry = CollectorRegistry(auto_describe=False)
    shared = directory()
    if shared is not None:
        MultiProcessCollector(registry, path=shared)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Fixed([*LOCAL.collect(), *_PROCESS.collect()]))
    registry.register(_Fixed(families(snapshot)))
    return generate_latest(registry)


def refresh_worker_stats() -> None:
    """Copy this process's CPU time and resident memory into its worker gauges."""
    made = instruments()
    for metric in _PROCESS.collect():
        for sample in metric.samples:
            if sample.name == "process_cpu_seconds_total":
                made.worker_cpu.set(sample.value)
            elif sample.name == "process_resident_memory_bytes":
                made.worker_rss.set(sample.value)


async def keep_worker_stats() -> None:
    """Refresh the worker gauges every few seconds, for the app's lifetime."""
    while True:
        refresh_worker_stats()
        await asyncio.sleep(WORKER_STATS_EVERY_S)
