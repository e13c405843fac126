"""Per-source timeout and last-known value, in the style of Home Assistant's update coordinator.

:class:`ResilientSource` wraps any :class:`~server.verify.sources.SourceAdapter`. Every lookup is
bounded by the source's own timeout. A successful ``ok`` answer is remembered per ID number
(a bounded LRU, in memory) with the time it was fetched; when the source later fails or is too
slow for that person, the remembered value comes back as ``status: "stale"`` with its age and
the error, so one upstream's outage degrades the answer instead of failing it. Whether a
stale value is still good enough is the policy's call (``[sources] max_stale_s``,
:func:`core.policy.usable`).

The wrapper logs once when its source starts failing and once when it recovers, never per
request, and counts failed lookups and stale answers. Log lines carry masked ID numbers only.
Each lookup's time, failure and staleness also go to /metrics (:class:`SourceMeter`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import quote

from core import idnumbers as identity
from core.checks import SourceResult
from server.metrics.instruments import SourceMeter
from server.verify.sources import LocalRecords, SourceAdapter

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LastKnown(NamedTuple):
    """A source's last ``ok`` value for one person and when it was fetched (a named tuple:
    one is made per source and verify, and a frozen dataclass costs several times more)."""

    value: Any
    fetched_at: datetime


@dataclass(frozen=True)
class SourceStats:
    """Counters of one wrapped source (for health pages and tests)."""

    name: str
    failing: bool
    failures: int
    stale_served: int
    remembered: int


class ResilientSource:
    """A source adapter with a timeout, a last-known value per person and once-only logging.

    ``max_entries`` bounds the remembered people (least recently used dropped first; 0 keeps
    none). ``clock`` returns an aware ``datetime`` (the app's clock) used for ``fetched_at``
    and ages. :meth:`lookup` never raises except on cancellation.
    """

    def __init__(
        self,
        adapter: SourceAdapter,
        *,
        timeout_s: float,
        max_entries: int = 100_000,
        clock: Clock | None = None,
    ) -> None:
        self.name = adapter.name
        self.adapter = adapter
        self.timeout_s = timeout_s
        self.max_entries = max_entries
        self._clock = clock or _utc_now
        self._last: OrderedDict[str, LastKnown] = OrderedDict()
        self.failing = False
        self.failures = 0
        self.stale_served = 0
        self.meter = SourceMeter(self.name)

    async def lookup(self, id_number: str) -> SourceResult[Any]:
        """Ask the source within the timeout; on failure answer the last-known value (stale)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):  # no task per lookup, unlike wait_for
                result: SourceResult[Any] = await self.adapter.lookup(id_number)
        except TimeoutError:
            result = self.timed_out(id_number)
        except Exception as exc:
            result = self.raised(id_number, exc)
        else:
            result = self.settle(id_number, result)
        self.meter.took(time.perf_counter() - started)
        return result

    def settle(
        self, id_number: str, result: SourceResult[Any], now: datetime | None = None
    ) -> SourceResult[Any]:
        """Account for the adapter's answer: remember an ``ok`` value (fetched ``now``, default
        the clock's time), stale-serve an error."""
        if result.status == "error":
            return self._failed(id_number, result.error or "failed", result.error or "error")
        if self.failing:
            self._recovered()
        self.meter.answered()
        if result.status == "ok":
            self._remember(id_number, result.value, now)
        elif result.status == "missing" and self._last:
            self._last.pop(id_number, None)  # the record is gone: never resurrect it
        return result

    def timed_out(self, id_number: str) -> SourceResult[Any]:
        """The answer when the adapter did not answer within the timeout."""
        return self._failed(id_number, "timeout", f"timed out after {self.timeout_s} s")

    def raised(self, id_number: str, exc: Exception) -> SourceResult[Any]:
        """The answer when the adapter raised ``exc``."""
        return self._failed(id_number, "failed", f"{type(exc).__name__}: {exc}")

    def now(self) -> datetime:
        """The wrapper's clock."""
        return self._clock()

    def peek(self, id_number: str) -> LastKnown | None:
        """The remembered value for ``id_number`` without asking the source (or None)."""
        return self._last.get(id_number)

    def stats(self) -> SourceStats:
        """Current counters."""
        return SourceStats(
            self.name, self.failing, self.failures, self.stale_served, len(self._last)
        )

    def _remember(self, id_number: str, value: Any, now: datetime | None = None) -> None:
        if self.max_entries <= 0:
            return
        self._last[id_number] = LastKnown(value, now or self._clock())
        self._last.move_to_end(id_number)
        while len(self._last) > self.max_entries:
            self._last.popitem(last=False)

    def _failed(self, id_number: str, error: str, why: str) -> SourceResult[Any]:
        self.failures += 1
        masked = identity.mask(id_number)
        why = why.replace(quote(id_number, safe=""), masked).replace(id_number, masked)
        if not self.failing:
            self.failing = True
            self.meter.failing(True)
            log.warning("source %s failing (lookup of %s): %s", self.name, masked, why)
        else:
            log.debug("source %s still failing (lookup of %s): %s", self.name, masked, why)
        known = self._last.get(id_number)
        self.meter.failed(error, stale=known is not None)
        if known is None:
            return SourceResult.failed(error)
        self._last.move_to_end(id_number)
        self.stale_served += 1
        age = max(0.0, (self._clock() - known.fetched_at).total_seconds())
        return SourceResult.stale(known.value, age, error)

    def _recovered(self) -> None:
        if self.failing:
            self.failing = False
            self.meter.failing(False)
            log.info("source %s recovered (%d failed lookups so far)", self.name, self.failures)


class ResilientGroup:
    """Several wrapped local sources answered by one statement (:class:`LocalRecords`).

    One lookup asks the shared records once, bounded by the shortest of the members'
    timeouts, and each member then accounts for its own part exactly as its own
    :meth:`ResilientSource.lookup` would (last-known values, once-only logging, counters).
    """

    def __init__(self, records: LocalRecords, members: Sequence[ResilientSource]) -> None:
        self.records = records
        self.members = list(members)
        self.timeout_s = min(m.timeout_s for m in self.members)
        # An inline SQLite read never yields to the loop, so no timer could interrupt it.
        self._timed = records.db.dialect != "sqlite"

    async def lookup(self, id_number: str) -> dict[str, SourceResult[Any]]:
        """Every member's answer for ``id_number``, by source name (each member's meter
        takes the one statement's time)."""
        started = time.perf_counter()
        try:
            if self._timed:
                async with asyncio.timeout(self.timeout_s):
                    records = await self.records.fetch(id_number)
            else:
                records = await self.records.fetch(id_number)
        except TimeoutError:
            answers = {m.name: m.timed_out(id_number) for m in self.members}
        except Exception as exc:
            answers = {m.name: m.raised(id_number, exc) for m in self.members}
        else:
            now = self.members[0].now()
            answers = {m.name: m.settle(id_number, records[m.name], now) for m in self.members}
        took = time.perf_counter() - started
        for member in self.members:
            member.meter.took(took)
        return answers


def group_sources(
    sources: Sequence[ResilientSource],
) -> tuple[list[ResilientGroup], list[ResilientSource]]:
    """Split ``sources`` into groups sharing one :class:`LocalRecords` and the rest."""
    shared: dict[int, tuple[LocalRecords, list[ResilientSource]]] = {}
    alone: list[ResilientSource] = []
    for source in sources:
        records = getattr(source.adapter, "records", None)
        if isinstance(records, LocalRecords):
            shared.setdefault(id(records), (records, []))[1].append(source)
        else:
            alone.append(source)
    return [ResilientGroup(r, members) for r, members in shared.values()], alone
