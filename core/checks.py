"""The four checks of a four-in-one decision, as plain typed records.

Source adapters produce them, the policy consumes them; neither knows of the other or of
HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, Literal, TypeVar

Status = Literal["ok", "missing", "error", "stale"]
T = TypeVar("T")

SOURCE_NAMES = ("health_code", "nat", "vaccination", "travel")

#: The fields an upstream answer can be mapped onto, per check kind: ``True`` when the
#: mapping must name it, ``False`` when it is optional (docs/server.md "HTTP upstreams").
MAPPED_FIELDS: dict[str, dict[str, bool]] = {
    "health_code": {"colour": True, "reason": False, "updated_at": False},
    "nat": {"result": True, "sampled_at": True, "lab": False},
    "vaccination": {"doses": True, "last_dose_at": False},
    "travel": {"flagged": True, "area": False, "updated_at": False},
}


@dataclass(frozen=True)
class HealthCode:
    """A person's health-code colour and the reason given for it."""

    colour: str  # green | yellow | red
    reason: str
    updated_at: datetime


@dataclass(frozen=True)
class NatResult:
    """The latest nucleic-acid test of a person."""

    result: str  # negative | positive
    sampled_at: datetime
    lab: str


@dataclass(frozen=True)
class Vaccination:
    """How many doses a person received and when the last one was."""

    doses: int
    last_dose_at: date | None


@dataclass(frozen=True)
class Travel:
    """Whether travel/risk history flags the person, and the area that did."""

    flagged: bool
    area: str
    updated_at: datetime


@dataclass(frozen=True)
class SourceResult(Generic[T]):
    """One source's answer: ``ok`` with a value, ``missing`` (no record) or ``error``.

    ``stale``: the source failed (``error`` says how) and ``value`` is the last value it gave
    for this person, ``age_s`` seconds old (:mod:`server.verify.resilience`).
    """

    status: Status
    value: T | None = None
    error: str = ""
    age_s: float | None = None

    @classmethod
    def ok(cls, value: T) -> SourceResult[T]:
        """A found record."""
        return cls("ok", value)

    @classmethod
    def missing(cls) -> SourceResult[T]:
        """No record for this person."""
        return cls("missing")

    @classmethod
    def failed(cls, error: str) -> SourceResult[T]:
        """The source failed or timed out; ``error`` is a short code (``timeout``, ``failed``)."""
        return cls("error", None, error)

    @classmethod
    def stale(cls, value: T, age_s: float, error: str) -> SourceResult[T]:
        """The source failed with ``error``; ``value`` is its last answer, ``age_s`` old."""
        return cls("stale", value, error, age_s)


@dataclass(frozen=True)
class Checks:
    """The four source answers for one person."""

    health_code: SourceResult[HealthCode]
    nat: SourceResult[NatResult]
    vaccination: SourceResult[Vaccination]
    travel: SourceResult[Travel]

    def by_name(self) -> dict[str, SourceResult[Any]]:
        """Return the four results keyed by source name."""
        return {
            "health_code": self.health_code,
            "nat": self.nat,
            "vaccination": self.vaccination,
            "travel": self.travel,
        }
