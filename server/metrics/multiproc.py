"""prometheus-client's multiprocess mode for ``kiosk server run --workers N``.

A scrape reaches one worker (SO_REUSEPORT picks it), yet must show every worker's counters.
So the supervisor makes a private directory before forking (:func:`prepare`), every worker
writes its counters there as memory-mapped files, and the worker answering a scrape merges
them all (``MultiProcessCollector``). A dead worker's live gauges are dropped
(:func:`worker_died`); its counters stay, so fleet totals never go down when a worker is
restarted. The directory is removed when the supervisor ends (:func:`finish`).

prometheus-client picks its value store (plain floats or mmap files) when it is first
imported, which here is before the supervisor runs: :func:`value_store_ready` corrects the
choice in a worker before its first metric value exists (server/metrics/instruments.py
creates them lazily for that reason).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from prometheus_client import multiprocess, values

ENV = "PROMETHEUS_MULTIPROC_DIR"


def directory() -> str | None:
    """The shared directory when this process is one of several workers, else None."""
    return os.environ.get(ENV) or None


def prepare() -> str:
    """Make a fresh private directory (mode 0700) and point this process, hence every worker
    forked from it, at it. Any inherited setting is replaced: an operator's directory would
    hold files of other runs, and :func:`finish` removes the directory."""
    path = tempfile.mkdtemp(prefix="siheyi-metrics-")
    os.environ[ENV] = path
    return path


def finish(path: str) -> None:
    """Remove the directory :func:`prepare` made and forget it."""
    if os.environ.get(ENV) == path:
        del os.environ[ENV]
    shutil.rmtree(path, ignore_errors=True)


def worker_died(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters remain part of the totals)."""
    path = directory()
    if path is not None:
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def value_store_ready() -> None:
    """Make metric values created from now on go to the shared directory when there is one."""
    if directory() is not None and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
