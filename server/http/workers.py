"""``kiosk server run --workers N``: a supervisor and N server processes on one port.

Each worker is a plain asyncio process running :func:`server.http.serving.serve` with
``SO_REUSEPORT``: every worker binds the same address and the kernel spreads new connections
over them. Why this rather than gunicorn's aiohttp worker:

* no extra dependency: gunicorn's aiohttp worker brings its pre-fork arbiter, its own
  configuration, logging and worker heartbeats — a model ``kiosk demo`` and a one-host
  deployment do not need;
* the kernel balances new connections across the listening sockets by a hash of the
  4-tuple, evenly, where with one shared accept queue the worker that wakes first tends to
  take most of them (the price: a stalled worker still gets its share until it dies and
  is restarted);
* each worker is the same single process a one-worker server is — same code, same start
  line, same tests — and holds no state that matters: everything that must hold across
  workers is in the database (docs/server.md "Several processes").

The supervisor (this module's :func:`supervise`) forks the workers after the database has
been opened and migrated once, forwards ``SIGTERM``/``SIGINT`` to them, restarts a worker
that dies unasked (after a backoff that doubles up to :data:`MAX_BACKOFF_S`, reset once a
worker has run :data:`STABLE_S`), and exits once every worker has stopped. ``N = 1`` does
not fork at all: the server runs in the calling process, as it always did.

Metrics: a scrape of ``/metrics`` reaches one worker, so the supervisor gives the workers a
private directory for prometheus-client's multiprocess mode before forking, tells it of each
dead worker, and removes it at the end (server/metrics/multiproc.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType

import msgspec

from core.systemd import notify_ready, notify_stopping, notify_watchdog, watchdog_interval
from server.config import LimitSettings
from server.metrics import multiproc

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
#: A worker that ran this long before dying is restarted without waiting.
STABLE_S = 60.0
#: How long stopping workers get before they are killed.
STOP_GRACE_S = 15.0

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1

Worker = Callable[[int], None]


def check_port(host: str, port: int, *, reuse_port: bool) -> None:
    """Bind (and release) every address ``host`` resolves to; ``OSError`` when one cannot be
    had — a port held by another program, or one below 1024 without the right. Checked once
    before forking: a worker that cannot bind would otherwise die and be restarted forever.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)


def per_worker_limits(limits: LimitSettings, workers: int) -> LimitSettings:
    """The token-bucket rates of one worker: the configured rates are the server's total.

    ``session_per_s``, ``enrol_per_s`` and ``login_per_s`` (and the session burst) protect
    what every worker shares — the database and the machine's cores — so N workers must not
    grant N times as much. In-flight ceilings stay per worker: they bound each process's
    own memory and event loop.
    """
    if workers <= 1:
        return limits
    return msgspec.structs.replace(
        limits,
        session_per_s=limits.session_per_s / workers,
        session_burst=max(1, limits.session_burst // workers),
        enrol_per_s=limits.enrol_per_s / workers,
        login_per_s=limits.login_per_s / workers,
    )


@dataclass
class _Slot:
    """One worker position: its current process and when it may be restarted."""

    index: int
    process: BaseProcess | None = None
    started: float = 0.0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float = 0.0
    restarts: int = field(default=0)


class Supervisor:
    """Starts ``workers`` processes running ``target(index)`` and keeps them running."""

    def __init__(self, target: Worker, workers: int) -> None:
        self._target = target
        self._slots = [_Slot(i) for i in range(workers)]
        self._context = multiprocessing.get_context("fork")
        self._stopping = False
        self._signal: int | None = None
        self._signalled: set[int] = set()

    def _spawn(self, slot: _Slot) -> None:
        process = self._context.Process(
            target=_run_worker, args=(self._target, slot.index), name=f"siheyi-worker-{slot.index}"
        )
        # A stop signal arriving between fork and the child's own handlers would run the
        # parent's handler in the child, which then ignores it: hold signals across the fork.
        # The slot knows its process before a held signal is handled, so it is forwarded.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
            slot.process, slot.started = process, time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        log.info("worker %d started (pid %s)", slot.index, process.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True
        self._signal = signum
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        """Pass the stop signal on to every worker, once each (a second one could cut its
        clean shutdown short)."""
        for slot in self._slots:
            pid = slot.process.pid if slot.process is not None else None
            if pid is not None and pid not in self._signalled:
                self._signalled.add(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    def run(self) -> int:
        """Run until a signal stops every worker; the exit status (0: a clean stop)."""
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            for slot in self._slots:
                self._spawn(slot)
            # Under systemd (NotifyAccess=main) this process speaks for the workers, whose own
            # notifications stay quiet: READY, watchdog pings while it supervises, STOPPING.
            notify_ready(f"{len(self._slots)} workers")
            ping_every, next_ping = watchdog_interval(), 0.0
            while not self._stopping:
                if ping_every is not None and time.monotonic() >= next_ping:
                    notify_watchdog()
                    next_ping = time.monotonic() + ping_every
                self._watch()
            notify_stopping()
            return self._stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _watch(self) -> None:
        """Wait for a worker to die (or a restart to fall due) and deal with it."""
        now = time.monotonic()
        sentinels = [s.process.sentinel for s in self._slots if s.process is not None]
        due = [s.restart_at for s in self._slots if s.process is None]
        timeout = max(0.0, min(due) - now) if due else 1.0
        multiprocessing.connection.wait(sentinels, timeout=min(timeout, 1.0))
        for slot in self._slots:
            if self._stopping:
                return
            if slot.process is not None and not slot.process.is_alive():
                self._died(slot)
            elif slot.process is None and time.monotonic() >= slot.restart_at:
                slot.restarts += 1
                self._spawn(slot)

    def _died(self, slot: _Slot) -> None:
        assert slot.process is not None
        code, ran = slot.process.exitcode, time.monotonic() - slot.started
        slot.process.join()
        if slot.process.pid is not None:
            multiproc.worker_died(slot.process.pid)
        slot.process = None
        if ran >= STABLE_S:
            slot.backoff_s = FIRST_BACKOFF_S
        slot.restart_at = time.monotonic() + slot.backoff_s
        log.error(
            "worker %d died (exit %s after %.1f s); restarting in %.1f s",
            slot.index,
            code,
            ran,
            slot.backoff_s,
        )
        slot.backoff_s = min(MAX_BACKOFF_S, slot.backoff_s * 2)

    def _stop(self) -> int:
        """Wait for the signalled workers; kill the ones that outstay the grace period."""
        self._forward(self._signal or signal.SIGTERM)  # a worker started as the signal came
        deadline = time.monotonic() + STOP_GRACE_S
        failed = False
        for slot in self._slots:
            process = slot.process
            if process is None:
                continue
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker %d did not stop within %.0f s: killed", slot.index, STOP_GRACE_S)
                process.kill()
                process.join()
                failed = True
            if process.pid is not None:
                multiproc.worker_died(process.pid)
        log.info("all workers stopped (signal %s)", self._signal)
        return 1 if failed else 0

    @property
    def pids(self) -> list[int]:
        """The running workers' process ids (tests)."""
        return [s.process.pid for s in self._slots if s.process is not None and s.process.pid]


def _run_worker(target: Worker, index: int) -> None:
    """The child: the parent's signal handlers are not ours; aiohttp installs its own. A
    stop signal held since the fork now ends the worker before it serves.

    The worker leaves the terminal's process group, so a Ctrl-C reaches it once, forwarded
    by the parent, rather than twice (a second one cuts its clean shutdown short); and it
    is sent ``SIGTERM`` should the parent die without forwarding anything.
    """
    os.setpgid(0, 0)
    _stop_with_parent()
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    code = 1
    try:
        target(index)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        # A stop during start-up can leave a pool's threads behind, which the normal exit
        # would wait for forever: the worker is done, so it leaves at once.
        logging.shutdown()
        os._exit(code)


def _stop_with_parent() -> None:
    """``prctl(PR_SET_PDEATHSIG, SIGTERM)`` where there is one (Linux); best effort."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        log.debug("no prctl: a worker outlives a killed supervisor")


def supervise(target: Worker, workers: int) -> int:
    """Run ``target(index)`` in ``workers`` processes until a signal; the exit status.
    The workers share a fresh metrics directory, removed when they have all stopped."""
    shared = multiproc.prepare()
    try:
        return Supervisor(target, workers).run()
    finally:
        multiproc.finish(shared)
