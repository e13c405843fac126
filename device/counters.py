"""A kiosk's own counters since its agent started, for the heartbeat (``Heartbeat.counters``).

Taps by the outcome the citizen got, taps decided offline (server unreachable), reader
errors and the tap-to-prompt latency as a histogram over ``core.wire.PROMPT_LATENCY_BOUNDS_S``.
They live in memory and start again at zero with each agent start; the heartbeat's
``boot_id`` tells the server so, and it keeps per-site totals that only grow
(server/metrics/kiosks.py). Counting is a few integer additions on the event loop, nothing
per tap goes to disk.
"""

from __future__ import annotations

import bisect
from typing import Protocol, cast

from core import wire
from core.outcomes import ALL_OUTCOMES, OutcomeName


class _Decided(Protocol):
    @property
    def outcome(self) -> str: ...
    @property
    def offline(self) -> bool: ...


class _Told(Protocol):
    """What :meth:`KioskCounterSet.told` reads of ``device.agent.TapResult``."""

    @property
    def decision(self) -> _Decided: ...
    @property
    def latency_ms(self) -> float | None: ...
    @property
    def seq(self) -> int | None: ...


class KioskCounterSet:
    """Counts taps, offline decisions, reader errors and prompt latencies."""

    def __init__(self) -> None:
        self.taps: dict[OutcomeName, int] = {}
        self.offline_decisions = 0
        self.reader_errors = 0
        self._latency = [0] * (len(wire.PROMPT_LATENCY_BOUNDS_S) + 1)
        self._latency_sum_s = 0.0

    def tapped(self, outcome: str, *, offline: bool) -> None:
        """One tap ended in ``outcome`` (``fault`` when the gate stayed shut for a fault)."""
        name = cast(OutcomeName, outcome if outcome in ALL_OUTCOMES else "fault")
        self.taps[name] = self.taps.get(name, 0) + 1
        if offline:
            self.offline_decisions += 1

    def prompt_started(self, latency_s: float) -> None:
        """The prompt began ``latency_s`` after the credential was read."""
        latency_s = max(0.0, latency_s)
        self._latency[bisect.bisect_left(wire.PROMPT_LATENCY_BOUNDS_S, latency_s)] += 1
        self._latency_sum_s += latency_s

    def reader_error(self) -> None:
        """A credential source was lost or failed to start, or could not read a card."""
        self.reader_errors += 1

    def told(self, result: _Told) -> None:
        """One finished tap, as the agent tells its listeners: its outcome (``fault`` when
        the decision could not be journalled, so the gate stayed shut) and, when a prompt
        played, its latency."""
        decision = result.decision
        self.tapped(
            decision.outcome if result.seq is not None else "fault", offline=decision.offline
        )
        if result.latency_ms is not None:
            self.prompt_started(result.latency_ms / 1000.0)

    def snapshot(self, journal_backlog: int) -> wire.KioskCounters:
        """The counters as the heartbeat carries them, with the journal's backlog now."""
        return wire.KioskCounters(
            taps=dict(sorted(self.taps.items())),
            offline_decisions=self.offline_decisions,
            reader_errors=self.reader_errors,
            prompt_latency=wire.LatencyCounts(list(self._latency), round(self._latency_sum_s, 6)),
            journal_backlog=max(0, journal_backlog),
        )
