"""Prometheus metrics at ``GET /metrics`` (issue 13, part 3; docs/metrics.md).

* process-local counters, counted where things happen (:mod:`.instruments`): verify latency
  by outcome, per-source latency, errors and staleness, audit ingest;
* the database's facts read once per scrape (:mod:`.fleet`): kiosks online/offline per site,
  open alerts, sessions, and the kiosks' own counters as per-site totals that only grow
  (:mod:`.kiosks`, folded at each heartbeat);
* ``--workers N``: prometheus-client's multiprocess mode (:mod:`.multiproc`);
* access: :mod:`.access` (``[metrics]``, :mod:`.settings`).

Wiring: :data:`server.metrics.views.OPERATIONS` in the route table and
:func:`server.metrics.views.install` in the app factory. This package imports nothing itself:
server/verify and server/audit import :mod:`.instruments`, which the app's own imports reach.
"""
