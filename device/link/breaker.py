"""A circuit breaker for the kiosk's calls to the server.

During an outage every tap would otherwise wait the whole lookup deadline before deciding
from the cache. After `threshold` consecutive failures the circuit opens: taps decide at
cache speed without calling the server, while a background probe checks the server every
`cooldown_s` (doubling up to `max_cooldown_s`). One successful probe closes the circuit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class CircuitBreaker:
    """closed → (threshold failures) → open → (probe succeeds) → closed."""

    def __init__(
        self,
        *,
        threshold: int = 3,
        cooldown_s: float = 2.0,
        max_cooldown_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._monotonic = monotonic
        self._failures = 0
        self._open_until: float | None = None
        self.cooldown_s = cooldown_s
        self.opened = 0  # times the circuit opened (reported in the heartbeat)

    @property
    def state(self) -> str:
        return "open" if self._open_until is not None else "closed"

    def allow(self) -> bool:
        """May a tap ask the server now?"""
        return self._open_until is None

    def probe_due(self) -> bool:
        return self._open_until is not None and self._monotonic() >= self._open_until

    def success(self) -> None:
        if self._open_until is not None:
            log.info("server reachable again: circuit closed")
        self._failures = 0
        self._open_until = None
        self.cooldown_s = self.base_cooldown_s

    def failure(self) -> None:
        self._failures += 1
        if self._open_until is not None:
            # a failed probe: wait longer before the next one
            self.cooldown_s = min(self.cooldown_s * 2, self.max_cooldown_s)
            self._open_until = self._monotonic() + self.cooldown_s
        elif self._failures >= self.threshold:
            self.opened += 1
            self._open_until = self._monotonic() + self.cooldown_s
            log.warning(
                "%d consecutive server failures: circuit open, deciding from cache", self._failures
            )
