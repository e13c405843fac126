"""CPU and memory of a process and its descendants, from ``/proc`` (bench/kiosk_resources.py).

The agent's cost is the whole tree it runs: its threads (the event loop, the journal's
writer, the camera's capture and decoding threads, FFmpeg's) are all in ``/proc/PID/stat``,
the prompt players it started and reaped are in the same line's ``cutime``/``cstime``, and a
player still running is a live descendant, read on its own. A :class:`Meter` samples memory
and thread counts once every ``interval_s`` on a thread; CPU is read at the phase's edges.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (which may hold spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children started from any thread, grandchildren)."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier]
        found += frontier
    return found


def cpu_s(pid: int, *, reaped: bool = True) -> float:
    """CPU seconds of ``pid``'s threads, plus its reaped children's when ``reaped``."""
    f = _stat_fields(pid)
    ticks = int(f[11]) + int(f[12])  # utime, stime (all threads)
    if reaped:
        ticks += int(f[13]) + int(f[14])  # cutime, cstime (children waited for)
    return ticks / CLK_TCK


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``, the children it reaped and the descendants still running."""
    total = cpu_s(pid)
    for child in descendants(pid):
        try:
            total += cpu_s(child)
        except OSError:  # ended between the scan and the read: its time is in cutime now
            continue
    return total


def rss_kib(pid: int) -> int:
    """Resident memory of one process (``/proc/PID/statm``), KiB."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` figure such as ``VmHWM`` (peak RSS), KiB; 0 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def threads(pid: int) -> int:
    return int(_stat_fields(pid)[17])


@dataclass
class Reading:
    """What a :class:`Meter` measured over one phase."""

    seconds: float
    cpu_pct: float  # percent of one core, the whole tree
    rss_mb_max: float  # the tree's resident memory, highest sample
    rss_mb_mean: float
    threads_max: int
    children_max: int  # live descendants seen at once (prompt players)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "cpu_pct": round(self.cpu_pct, 2),
            "rss_mb_max": round(self.rss_mb_max, 1),
            "rss_mb_mean": round(self.rss_mb_mean, 1),
            "threads_max": self.threads_max,
            "children_max": self.children_max,
        }


class Meter:
    """Measures one process tree between :meth:`start` and :meth:`stop`."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss: list[int] = []
        self._threads = 0
        self._children = 0
        self._t0 = self._cpu0 = 0.0

    def start(self) -> Meter:
        self._rss, self._threads, self._children = [], 0, 0
        self._t0, self._cpu0 = time.monotonic(), tree_cpu_s(self.pid)
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="meter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Reading:
        cpu, t = tree_cpu_s(self.pid), time.monotonic()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample_once()
        seconds = t - self._t0
        rss = self._rss or [0]
        return Reading(
            seconds=seconds,
            cpu_pct=100.0 * (cpu - self._cpu0) / seconds,
            rss_mb_max=max(rss) / 1024,
            rss_mb_mean=sum(rss) / len(rss) / 1024,
            threads_max=self._threads,
            children_max=self._children,
        )

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample_once()

    def _sample_once(self) -> None:
        try:
            kids = descendants(self.pid)
            total = rss_kib(self.pid)
            count = threads(self.pid)
        except OSError:
            return  # the process ended: the bench notices and says so
        for child in kids:
            try:
                total += rss_kib(child)
            except OSError:
                continue
        self._rss.append(total)
        self._threads = max(self._threads, count)
        self._children = max(self._children, len(kids))
