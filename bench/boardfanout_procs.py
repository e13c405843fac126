"""Processes of bench/board_fanout.py: JSON-line children, the server, and /proc readings.

A child (kiosk sockets, boards, taps) gets its spec as one JSON line on stdin and answers in
JSON lines on stdout; :class:`Child` reads them in a thread so the bench can wait for one
child while the others keep talking. Memory and CPU come from ``/proc`` (RSS, and PSS,
which splits the pages forked workers share instead of counting them once per worker).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
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
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
