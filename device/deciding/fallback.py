"""Offline decisions: cached facts through the shared pure policy, at tap time.

The kiosk does not keep a second copy of the rules: `core.policy.decide` is a pure function
of the four checks, the clock and the site policy, so the kiosk feeds it the cached facts and
its own clock. Without a trusted clock nothing that depends on time can pass.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from core.checks import (
    Checks,
    HealthCode,
    NatResult,
    SourceResult,
    Travel,
    Vaccination,
)
from core.errors import PolicyDocumentError
from core.outcomes import Outcome
from core.policy import SitePolicy, decide, policy_from_document
from device.deciding.cache import parse_time
from device.errors import FactsError

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _status(check: Mapping[str, Any]) -> str:
    status = check.get("status")
    if status not in ("ok", "missing"):
        raise FactsError(f"unusable status {status!r}")
    return str(status)


def _when(value: Any, what: str) -> dt.datetime:
    parsed = parse_time(value)
    if parsed is None:
        raise FactsError(f"{what}: not a timestamp: {value!r}")
    return parsed


def checks_from_facts(facts: Mapping[str, Any]) -> Checks:
    """Rebuild the policy's input from cached facts."""
    try:
        hc, nat, vac, tr = (facts[k] for k in ("health_code", "nat", "vaccination", "travel"))
    except (KeyError, TypeError) as exc:
        raise FactsError(f"incomplete facts: {exc}") from exc
    health: SourceResult[HealthCode] = SourceResult.missing()
    if _status(hc) == "ok":
        health = SourceResult.ok(
            HealthCode(str(hc.get("colour")), "", parse_time(hc.get("updated_at")) or _EPOCH)
        )
    nat_result: SourceResult[NatResult] = SourceResult.missing()
    if _status(nat) == "ok":
        nat_result = SourceResult.ok(
            NatResult(str(nat.get("result")), _when(nat.get("sampled_at"), "nat.sampled_at"), "")
        )
    vaccination: SourceResult[Vaccination] = SourceResult.missing()
    if _status(vac) == "ok":
        doses = vac.get("doses")
        if not isinstance(doses, int):
            raise FactsError(f"vaccination.doses: {doses!r}")
        vaccination = SourceResult.ok(Vaccination(doses, None))
    travel: SourceResult[Travel] = SourceResult.missing()
    if _status(tr) == "ok":
        travel = SourceResult.ok(
            Travel(
                bool(tr.get("flagged")),
                str(tr.get("area") or ""),
                parse_time(tr.get("updated_at")) or _EPOCH,
            )
        )
    return Checks(health, nat_result, vaccination, travel)


def policy_from_facts(facts: Mapping[str, Any]) -> SitePolicy:
    """The site policy the cached facts were decided under (the defaults where absent)."""
    policy = facts.get("policy")
    try:
        return policy_from_document(policy if isinstance(policy, Mapping) else {})
    except PolicyDocumentError as exc:
        raise FactsError(str(exc)) from None


def decide_offline(
    facts: Mapping[str, Any], now: dt.datetime, *, clock_trusted: bool
) -> tuple[str, tuple[str, ...]]:
    """(outcome, reasons) from cached facts; time-dependent outcomes need a trusted clock."""
    decision = decide(checks_from_facts(facts), now, policy_from_facts(facts))
    if not clock_trusted and decision.outcome in (Outcome.PASS, Outcome.NAT_EXPIRED):
        return Outcome.CHECK.value, (*decision.reasons, "clock_untrusted")
    return decision.outcome.value, decision.reasons
