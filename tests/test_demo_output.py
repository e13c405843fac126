"""`kiosk demo` output a person can read (issue 14, part 2): headings above the taps, and a
summary line (counts per outcome, p50/p99 latency) whether the run ends by ``--taps`` or by
Ctrl-C, a JSON object with ``--json``. Ctrl-C is a real SIGINT to a real subprocess."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
import unicodedata

from device.agent import TapResult
from device.deciding.verifier import Decision
from siheyi.demo import Tally, format_line, heading_line

from .test_cli import ENV, KIOSK, run

DEMO = ["demo", "--port", "0", "--people", "1000", "--player", "null"]


class Demo:
    """The demo running until Ctrl-C, its stdout lines arriving on a queue."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*KIOSK, *DEMO, "--interval", "0.1", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=ENV,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.pump.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def _interrupted_after(taps: int, *args: str) -> tuple[int, list[str]]:
    """Run the demo until ``taps`` taps are printed, send SIGINT, return (status, lines)."""
    demo = Demo(*args)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while sum(line.startswith(("[", '{"tap"')) for line in seen) < taps:
            seen.append(demo.lines.get(timeout=max(0.1, deadline - time.monotonic())))
        demo.proc.send_signal(signal.SIGINT)
        status = demo.proc.wait(timeout=60)
    finally:
        demo.close()
    while not demo.lines.empty():
        seen.append(demo.lines.get_nowait())
    return status, seen


def test_ctrl_c_ends_with_a_summary_of_the_taps_under_headings() -> None:
    status, lines = _interrupted_after(3)
    assert status == 0
    first = lines.index(heading_line())  # after the set-up lines (server, board, reader …)
    assert lines[first].split()[:4] == ["tap", "id", "(masked)", "outcome"]
    taps = [line for line in lines if line.startswith("[")]
    assert lines[first + 1] == taps[0]
    assert len(taps) >= 3
    summary = lines[-1]
    assert summary.startswith(f"summary: {len(taps)} taps (Ctrl-C): ")
    assert "p50 " in summary and "p99 " in summary
    outcomes = {line.split("]", 1)[1].split()[1] for line in taps}
    assert all(f"{outcome} " in summary for outcome in outcomes)


def test_ctrl_c_with_json_ends_with_one_summary_object() -> None:
    status, lines = _interrupted_after(2, "--json")
    assert status == 0
    objects = [json.loads(line) for line in lines]  # stdout is JSON lines only, no headings
    taps, summary = objects[:-1], objects[-1]["summary"]
    assert len(taps) >= 2 and all("tap" in t for t in taps)
    assert summary["taps"] == len(taps) and summary["ended_by"] == "Ctrl-C"
    counts: dict[str, int] = {}
    for t in taps:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    assert summary["outcomes"] == counts
    played = sorted(t["latency_ms"] for t in taps if t["latency_ms"] is not None)
    assert summary["latency_ms"]["p99"] == played[-1]


def test_taps_end_with_the_summary_too() -> None:
    proc = run(*DEMO, "--taps", "3", "--interval", "0.05", timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    first = lines.index(heading_line())
    assert [line[:6] for line in lines[first + 1 : first + 4]] == ["[   1]", "[   2]", "[   3]"]
    assert lines[-1].startswith("summary: 3 taps (--taps): ")
    # No log line between the rows: stderr has the set-up lines only (`kiosk -v demo`: all)
    assert " INFO " not in proc.stderr, proc.stderr[-2000:]


def test_summary_counts_and_nearest_rank_percentiles() -> None:
    tally = Tally()
    for i in range(1, 101):
        tally.add("pass" if i % 4 else "check", float(i))
    tally.add("invalid_credential", None)  # nothing played: counted, no latency
    assert tally.percentile(0.5) == 50.0 and tally.percentile(0.99) == 99.0
    line = tally.summary(interrupted=False, as_json=False)
    assert line == (
        "summary: 101 taps (--taps): check 25, invalid_credential 1, pass 75;"
        " latency p50 50.0 ms, p99 99.0 ms"
    )
    body = json.loads(tally.summary(interrupted=True, as_json=True))["summary"]
    assert body == {
        "taps": 101,
        "outcomes": {"pass": 75, "check": 25, "invalid_credential": 1},
        "latency_ms": {"p50": 50.0, "p99": 99.0},
        "ended_by": "Ctrl-C",
    }


def _cells(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def test_headings_stay_over_their_columns_with_chinese_prompts() -> None:
    """A Chinese prompt is two terminal cells per character: the columns after it (where,
    latency, reasons) must still start under their headings."""
    decision = Decision("t1", "check", "非绿码请核查", False, "1101**********1234", "p" * 8)
    line = format_line(7, TapResult(decision, 5.1, True, 1), as_json=False)
    heading = heading_line()
    assert _cells(line[: line.index("online")]) == heading.index("where")
    assert _cells(line[: line.index("-")]) == heading.index("reasons")
