"""The four sources behind a lookup's decision, as the guard reads them.

The verifier answers one value per source (what the kiosk would be decided by); a local
source's tables hold more, and the guard sees it: the last few NAT results, every vaccine
dose with its date. For an HTTP upstream only the verifier's value exists, so that is shown
(``origin: "upstream"``). A source that failed shows its error, or its last-known value
marked ``stale`` when the verifier used one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from core.checks import HealthCode, NatResult, SourceResult, Travel, Vaccination
from core.policy import SitePolicy, nat_age_hours
from server.lookup.store import History, iso
from server.lookup.wire import (
    Dose,
    HealthCodeFacts,
    LookupChecks,
    NatFacts,
    NatSample,
    Origin,
    TravelFacts,
    TravelFlag,
    VaccinationFacts,
)
from server.verify.service import Verification, Verifier
from server.verify.sources import LocalSource

_MISSING: SourceResult[Any] = SourceResult.missing()


def origins(verifier: Verifier) -> dict[str, Origin]:
    """Each source's origin: ``local`` when it reads the server's own tables."""
    return {
        name: "local" if isinstance(source.adapter, LocalSource) else "upstream"
        for name, source in verifier.sources.items()
    }


def wants_history(verification: Verification, where: Mapping[str, Origin]) -> bool:
    """Whether the tables hold more than the verifier's answer: a local NAT or vaccination
    source that answered afresh (a failed one would fail again)."""
    checks = verification.checks
    if checks is None:
        return False
    return any(
        where.get(name) == "local" and result.status == "ok"
        for name, result in (("nat", checks.nat), ("vaccination", checks.vaccination))
    )


def build(
    verification: Verification,
    where: Mapping[str, Origin],
    history: History | None,
    now: datetime,
    policy: SitePolicy,
) -> LookupChecks:
    """The ``checks`` of the answer; ``history`` (local tables) is used for a local source
    that answered ``ok``."""
    found = verification.checks.by_name() if verification.checks else {}

    def part(name: str) -> tuple[SourceResult[Any], dict[str, Any]]:
        result = found.get(name, _MISSING)
        return result, _common(result, where.get(name, "upstream"))

    def local(name: str, result: SourceResult[Any]) -> History | None:
        fresh = where.get(name) == "local" and result.status == "ok"
        return history if fresh else None

    code, base = part("health_code")
    health = _health(code.value, base)
    nat, base = part("nat")
    nat_facts = _nat(nat.value, local("nat", nat), now, policy, base)
    vac, base = part("vaccination")
    vaccination = _vaccination(vac.value, local("vaccination", vac), policy, base)
    travel, base = part("travel")
    return LookupChecks(health, nat_facts, vaccination, _travel(travel.value, base))


def _common(result: SourceResult[Any], origin: Origin) -> dict[str, Any]:
    stale = result.status == "stale"
    return {
        "status": "ok" if stale else result.status,
        "origin": origin,
        "error": result.error or None,
        "stale": stale,
        "age_s": round(result.age_s, 1) if stale and result.age_s is not None else None,
    }


def _health(value: HealthCode | None, base: dict[str, Any]) -> HealthCodeFacts:
    if value is None:
        return HealthCodeFacts(**base)
    return HealthCodeFacts(
        **base, colour=value.colour, reason=value.reason, updated_at=iso(value.updated_at)
    )


def _nat(
    value: NatResult | None,
    history: History | None,
    now: datetime,
    policy: SitePolicy,
    base: dict[str, Any],
) -> NatFacts:
    window = float(policy.nat_window_hours)
    if history is not None and history.nat:
        rows = [(r, datetime.fromisoformat(at), lab) for r, at, lab in history.nat]
    elif value is not None:
        rows = [(value.result, value.sampled_at, value.lab)]
    else:
        rows = []
    samples = [
        NatSample(result, iso(at), round(nat_age_hours(at, now), 2), lab)
        for result, at, lab in rows
    ]
    return NatFacts(**base, window_hours=window, results=samples)


def _vaccination(
    value: Vaccination | None, history: History | None, policy: SitePolicy, base: dict[str, Any]
) -> VaccinationFacts:
    doses = [Dose(d, at, v) for d, at, v in history.doses] if history is not None else []
    if value is None:
        return VaccinationFacts(**base, min_doses=policy.min_doses, history=doses)
    last = value.last_dose_at.isoformat() if value.last_dose_at else None
    return VaccinationFacts(
        **base, min_doses=policy.min_doses, doses=value.doses, last_dose_at=last, history=doses
    )


def _travel(value: Travel | None, base: dict[str, Any]) -> TravelFacts:
    if value is None:
        return TravelFacts(**base)
    flag = TravelFlag(value.flagged, value.area, iso(value.updated_at))
    return TravelFacts(**base, flagged=value.flagged, flags=[flag])
