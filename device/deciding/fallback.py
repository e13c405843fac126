"""Offline decisions: cached facts through the server's own pure policy, at tap time.

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
from core.policy import decide
from device.deciding.cache import parse_time
from server.config import SitePolicy

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class FactsError(ValueError):
    """Cached facts that cannot be turned into checks (corrupt or from an old format)."""


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


def policy_from_facts(facts: Mapping[str, Any], prompts: Mapping[str, str]) -> SitePolicy:
    policy = facts.get("policy") if isinstance(facts.get("policy"), Mapping) else {}
    assert isinstance(policy, Mapping)
    window = policy.get("nat_window_hours", 48.0)
    doses = policy.get("min_doses", 0)
    if isinstance(window, bool) or not isinstance(window, int | float) or window <= 0:
        raise FactsError(f"policy.nat_window_hours: {window!r}")
    if isinstance(doses, bool) or not isinstance(doses, int) or doses < 0:
        raise FactsError(f"policy.min_doses: {doses!r}")
    return SitePolicy(nat_window_hours=float(window), min_doses=doses, prompts=prompts)


def decide_offline(
    facts: Mapping[str, Any], now: dt.datetime, *, clock_trusted: bool
) -> tuple[str, tuple[str, ...]]:
    """(outcome, reasons) from cached facts; time-dependent outcomes need a trusted clock."""
    prompts = {k: k for k in ("pass", "check", "nat_expired", "invalid_credential")}
    decision = decide(checks_from_facts(facts), now, policy_from_facts(facts, prompts))
    if not clock_trusted and decision.outcome in ("pass", "nat_expired"):
        return "check", (*decision.reasons, "clock_untrusted")
    return decision.outcome, decision.reasons
