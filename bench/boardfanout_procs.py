"""Processes of bench/board_fanout.py: JSON-line children, the server, and /proc readings.

A child (kiosk sockets, boards, taps) gets its spec as one JSON line on stdin and answers in
JSON lines on stdout; :class:`Child` reads them in a thread so the bench can wait for one
child while the others keep talking. Memory and CPU come from ``/proc`` (RSS, and PSS,
which splits the pages forked workers share instead of counting them once per worker).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import fleetload_setup as setup

ROOT = setup.ROOT


class Child:
    """A bench child process speaking JSON lines."""

    def __init__(self, script: str, spec: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / script)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.last: dict[str, Any] = {}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def wait_for(self, key: str, timeout_s: float) -> dict[str, Any]:
        """The first line holding ``key`` (progress lines before it are kept in ``last``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise SystemExit(f"no {key!r} from a child within {timeout_s:.0f} s") from None
            if line is None:
                raise SystemExit(f"a child ended before saying {key!r} (see its stderr)")
            self.last = line
            if key in line:
                return line

    def stop(self, key: str, timeout_s: float = 60) -> dict[str, Any]:
        """Say ``stop``; its answer holding ``key``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        return self.wait_for(key, timeout_s)

    def kill(self) -> None:
        setup.stop([self.proc])  # type: ignore[list-item]


def start_server(
    database: str, port: int, workers: int, extra: list[str], log: Path
) -> subprocess.Popen[bytes]:
    """``kiosk server run`` (through bench/boardfanout_server.py), its workers all up."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "boardfanout_server.py"), "server", "run",
         "--database", database, "--port", str(port), "--workers", str(workers), *extra],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "BOARDFANOUT_LAG_DIR": str(log.parent)},
    )  # fmt: skip
    setup.wait_port(port, proc)
    wait_workers(proc, workers)
    return proc


def wait_workers(proc: subprocess.Popen[bytes], workers: int, timeout_s: float = 30) -> None:
    """Until ``workers`` processes serve (one process when there is no supervisor)."""
    deadline = time.monotonic() + timeout_s
    while len(worker_pids(proc)) < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # each worker's startup (database pool, bus listener) settles


def worker_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    """The serving processes: the forked workers, or the process itself when alone."""
    pids = setup.children(proc.pid)
    return pids[1:] if len(pids) > 1 else pids


def memory_kib(pids: list[int]) -> dict[str, int]:
    """Summed RSS and PSS of ``pids``, KiB."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return {"rss_kib": rss, "pss_kib": pss}


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM the process's group (its workers too), SIGKILL whatever is left after
    ``grace_s``: a server closing thousands of sockets may take longer than it should, and
    must not outlive the bench."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        print(f"  process group {proc.pid} still running after {grace_s:.0f} s: killed")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def log_summary(log: Path, top: int = 8) -> list[str]:
    """The server log's warnings and errors, digits folded, most frequent first."""
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        for level in (" WARNING ", " ERROR ", " CRITICAL "):
            if level in line:
                counts[re.sub(r"\d+", "#", line.split(level, 1)[1])[:140]] += 1
    return [f"{n} × {text}" for text, n in counts.most_common(top)]


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of ``pid`` for ``seconds`` (raw collapsed stacks), if installed."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        print("  no profile: py-spy is not installed (.venv/bin/pip install py-spy)")
        return None
    return subprocess.Popen(
        [str(spy), "record", "--format", "raw", "--nonblocking", "-r", "50", "-d",
         str(max(1, int(seconds))), "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def hottest(raw: Path, top: int = 12) -> list[str]:
    """The functions most often on top of the sampled stacks (own time), as percentages."""
    own: Counter[str] = Counter()
    total = 0
    if not raw.exists():
        return []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        own[frames[-1][:110]] += int(count)
        total += int(count)
    return [f"{100 * n / total:5.1f}% {frame}" for frame, n in own.most_common(top)]


def schedstat_s(pids: list[int]) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) so far, over every thread of
    ``pids`` (``/proc/PID/task/TID/schedstat``): the wait is what other processes on the
    machine cost the server, told apart from what it does itself."""
    ran = waited = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                fields = (task / "schedstat").read_text().split()
            except OSError:
                continue
            ran += int(fields[0])
            waited += int(fields[1])
    return ran / 1e9, waited / 1e9


def loop_lags(lag_dir: Path, since: float, until: float) -> dict[str, float]:
    """The workers' event-loop lag between ``since`` and ``until`` (unix seconds), from the
    probes bench/boardfanout_server.py runs in each worker: p50/p99/max in ms."""
    lags: list[float] = []
    for path in lag_dir.glob("lag-*.txt"):
        for line in path.read_text().splitlines():
            at, lag = (float(x) for x in line.split())
            if since <= at <= until:
                lags.append(lag)
    lags.sort()
    if not lags:
        return {}

    def pick(q: float) -> float:
        return round(1000 * lags[min(len(lags) - 1, int(q * len(lags)))], 1)

    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0)}
