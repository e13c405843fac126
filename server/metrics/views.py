"""``GET /metrics`` (Prometheus text), its access rule, and the app wiring (:func:`install`).

The route's auth is "none" in the route table: the handler applies the ``[metrics]`` rule
itself (server/metrics/access.py), since loopback and the configured networks need no token.
``/metrics`` is outside ``/v1/``, so the rate limiter does not count it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from server.appkeys import CLOCK, DATABASE
from server.http.operations import Operation
from server.metrics.access import MetricsAccess
from server.metrics.exposition import CONTENT_TYPE, keep_worker_stats, render
from server.metrics.fleet import SnapshotCache
from server.metrics.settings import MetricsSettings

ACCESS = web.AppKey("metrics_access", MetricsAccess)
SNAPSHOTS = web.AppKey("metrics_snapshots", SnapshotCache)
_DEFAULT_ACCESS = MetricsAccess(MetricsSettings())


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: every metric of docs/metrics.md."""
    await request.app.get(ACCESS, _DEFAULT_ACCESS).check(request)
    cache = request.app.get(SNAPSHOTS)
    snapshot = await cache.get() if cache is not None else None
    return web.Response(body=render(snapshot), headers={"Content-Type": CONTENT_TYPE})


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """The scrape-time snapshot cache and this worker's CPU/memory refresher."""
    app[SNAPSHOTS] = SnapshotCache(app[DATABASE], app[CLOCK])
    task = asyncio.create_task(keep_worker_stats(), name="metrics-worker-stats")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def install(app: web.Application, settings: MetricsSettings) -> None:
    """Give ``app`` the ``[metrics]`` access rule and the metrics context (after the
    database context, which it reads)."""
    app[ACCESS] = MetricsAccess(settings)
    app.cleanup_ctx.append(metrics_ctx)


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/metrics",
        metrics,
        "none",
        "Prometheus metrics: loopback and [metrics] networks without a token, anyone else "
        "with the [metrics] token or an admin's or auditor's bearer token",
        errors=(401, 403),
        media_type="text/plain",
    ),
)
