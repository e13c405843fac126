"""The four-in-one policy: pure functions of the checks, the clock and the site policy."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

from core.checks import Checks, SourceResult
from server.config import DEFAULT_MAX_STALE_S, SitePolicy

T = TypeVar("T")

PASS = "pass"
CHECK = "check"
NAT_EXPIRED = "nat_expired"
INVALID_CREDENTIAL = "invalid_credential"


@dataclass(frozen=True)
class Decision:
    """An outcome, the prompt to speak and machine-readable reasons for a non-pass."""

    outcome: str
    prompt: str
    reasons: tuple[str, ...]


def nat_age_hours(sampled_at: datetime, now: datetime) -> float:
    """Hours between sampling and ``now`` (negative if sampled in the future)."""
    return (now - sampled_at).total_seconds() / 3600.0


def usable(result: SourceResult[T], max_stale_s: float = DEFAULT_MAX_STALE_S) -> SourceResult[T]:
    """``result`` as the policy sees it: a ``stale`` value at most ``max_stale_s`` old counts
    like ``ok``; an older one (or one of unknown age) is an ``error`` with the source's error.
    """
    if result.status == "stale" and (result.age_s is None or result.age_s > max_stale_s):
        return SourceResult.failed(result.error or "failed")
    return result


def usable_checks(checks: Checks, max_stale_s: float = DEFAULT_MAX_STALE_S) -> Checks:
    """:func:`usable` applied to each of the four checks."""
    return replace(
        checks,
        health_code=usable(checks.health_code, max_stale_s),
        nat=usable(checks.nat, max_stale_s),
        vaccination=usable(checks.vaccination, max_stale_s),
        travel=usable(checks.travel, max_stale_s),
    )


def decide(
    checks: Checks | None,
    now: datetime,
    site_policy: SitePolicy,
    *,
    credential_valid: bool = True,
    max_stale_s: float = DEFAULT_MAX_STALE_S,
    invalid_reason: str = "bad_checksum",
) -> Decision:
    """Decide pass / check / nat_expired / invalid_credential (DESIGN.md "Outcomes").

    - invalid credential (``checks`` is None or ``credential_valid`` false) → invalid_credential
      with ``invalid_reason`` (``bad_checksum``; ``unknown_qr`` for a QR token nobody knows)
    - no record in any source → check (``unknown_person``)
    - code not green, travel flag, positive NAT, a missing or failed source the policy needs,
      too few doses → check
    - otherwise green but the latest NAT is a negative older than the window → nat_expired
    - otherwise → pass

    A NAT exactly ``nat_window_hours`` old is still within the window. A ``stale`` check (a
    source's last-known value) is used like ``ok`` while it is at most ``max_stale_s`` old and
    is a failed source after that.
    """
    if checks is None or not credential_valid:
        return _decision(INVALID_CREDENTIAL, site_policy, [invalid_reason])
    checks = usable_checks(checks, max_stale_s)

    results = checks.by_name()
    if all(r.status == "missing" for r in results.values()):
        return _decision(CHECK, site_policy, ["unknown_person"])

    reasons: list[str] = []
    code = checks.health_code
    if code.status == "error":
        reasons.append("source_error:health_code")
    elif code.value is None:
        reasons.append("code_missing")
    elif code.value.colour != "green":
        reasons.append("code_not_green")

    nat = checks.nat
    if nat.status == "error":
        reasons.append("source_error:nat")
    elif nat.value is None:
        reasons.append("nat_missing")
    elif nat.value.result != "negative":
        reasons.append("nat_positive")
    elif nat_age_hours(nat.value.sampled_at, now) > site_policy.nat_window_hours:
        reasons.append("nat_expired")

    if site_policy.min_doses > 0:
        vac = checks.vaccination
        if vac.status == "error":
            reasons.append("source_error:vaccination")
        else:
            doses = vac.value.doses if vac.value is not None else 0
            if doses < site_policy.min_doses:
                reasons.append("doses_below_minimum")

    travel = checks.travel
    if travel.status == "error":
        reasons.append("source_error:travel")
    elif travel.value is None:
        reasons.append("travel_missing")
    elif travel.value.flagged:
        reasons.append("travel_flag")

    if not reasons:
        return _decision(PASS, site_policy, reasons)
    if reasons == ["nat_expired"]:
        return _decision(NAT_EXPIRED, site_policy, reasons)
    return _decision(CHECK, site_policy, reasons)


def _decision(outcome: str, site_policy: SitePolicy, reasons: list[str]) -> Decision:
    return Decision(outcome, site_policy.prompt(outcome), tuple(reasons))
