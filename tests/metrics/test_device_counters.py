"""device/counters.py on its own: what a kiosk counts and how the heartbeat carries it."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest

from core import wire
from device.counters import KioskCounterSet
from server.metrics.kiosks import flatten


@dataclass(frozen=True)
class _Decision:
    outcome: str
    offline: bool


@dataclass(frozen=True)
class _Result:
    decision: _Decision
    latency_ms: float | None
    seq: int | None


def test_taps_by_outcome_offline_and_faults() -> None:
    counters = KioskCounterSet()
    counters.told(_Result(_Decision("pass", False), 80.0, 1))
    counters.told(_Result(_Decision("pass", True), 120.0, 2))
    counters.told(_Result(_Decision("check", True), None, 3))  # nothing played
    counters.told(_Result(_Decision("pass", False), None, None))  # not journalled: gate shut
    counters.tapped("something-new", offline=False)
    made = counters.snapshot(journal_backlog=7)
    assert made.taps == {"check": 1, "fault": 2, "pass": 2}
    assert made.offline_decisions == 2
    assert made.journal_backlog == 7
    assert sum(made.prompt_latency.buckets) == 2
    assert made.prompt_latency.sum_s == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("latency_s", "bucket"),
    [(0.0, 0), (0.1, 0), (0.1001, 1), (0.25, 1), (1.5, 4), (3.0, 5), (3.01, 6), (60.0, 6)],
)
def test_latency_buckets_hold_their_upper_bound(latency_s: float, bucket: int) -> None:
    counters = KioskCounterSet()
    counters.prompt_started(latency_s)
    buckets = counters.snapshot(0).prompt_latency.buckets
    assert len(buckets) == len(wire.PROMPT_LATENCY_BOUNDS_S) + 1
    assert buckets[bucket] == 1 and sum(buckets) == 1


def test_reader_errors_count() -> None:
    counters = KioskCounterSet()
    counters.reader_error()
    counters.reader_error()
    assert counters.snapshot(0).reader_errors == 2


def test_the_heartbeat_carries_them_and_the_server_reads_them() -> None:
    counters = KioskCounterSet()
    counters.told(_Result(_Decision("nat_expired", True), 300.0, 1))
    counters.reader_error()
    status = {"boot_id": "b1", "counters": msgspec.to_builtins(counters.snapshot(3))}
    beat = msgspec.convert(msgspec.json.decode(msgspec.json.encode(status)), wire.Heartbeat)
    assert beat.counters is not None
    assert flatten(beat.counters) == {
        "taps.nat_expired": 1.0,
        "offline_decisions": 1.0,
        "reader_errors": 1.0,
        "latency.2": 1.0,
        "latency_sum": 0.3,
    }
    assert beat.counters.journal_backlog == 3


def test_a_snapshot_is_a_copy() -> None:
    counters = KioskCounterSet()
    first = counters.snapshot(0)
    counters.told(_Result(_Decision("pass", False), 50.0, 1))
    assert first.taps == {} and sum(first.prompt_latency.buckets) == 0
