"""The four-in-one policy: pure functions of the checks, the clock and the site policy.

Deciding and presenting are separate: :func:`decide` gives an outcome and reason codes from
the checks, the clock and the site's numbers and colour table; :func:`prompt_for` attaches
the words afterwards. The kiosk's offline fallback runs the very same :func:`decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

from core.checks import Checks, SourceResult
from core.errors import PolicyDocumentError
from core.outcomes import DEFAULT_PROMPTS, Outcome

T = TypeVar("T")

PASS = Outcome.PASS
CHECK = Outcome.CHECK
NAT_EXPIRED = Outcome.NAT_EXPIRED
INVALID_CREDENTIAL = Outcome.INVALID_CREDENTIAL

#: How old a source's last-known value may be before the policy treats the source as failed.
DEFAULT_MAX_STALE_S = 6 * 3600.0
DEFAULT_NAT_WINDOW_HOURS = 48.0
#: Reason code of a health-code colour that is not in the site's colour table.
UNKNOWN_COLOUR_REASON = "code_colour_unknown"


@dataclass(frozen=True)
class ColourRule:
    """What one health-code colour means at a site: pass or check, the reason code given
    when it checks, and optionally its own prompt (spoken instead of the outcome's)."""

    passes: bool
    reason: str = "code_not_green"
    prompt: str | None = None


#: Provincial health codes: green passes, yellow and red check (today's behaviour). Sites
#: that scan four-colour passes add ``blue`` (and their own prompts) in configuration.
DEFAULT_COLOURS: Mapping[str, ColourRule] = MappingProxyType(
    {
        "green": ColourRule(passes=True, reason=""),
        "yellow": ColourRule(passes=False),
        "red": ColourRule(passes=False),
    }
)


@dataclass(frozen=True)
class SitePolicy:
    """The decision policy of one site (the fleet default or a site override)."""

    nat_window_hours: float = DEFAULT_NAT_WINDOW_HOURS
    min_doses: int = 0
    prompts: Mapping[str, str] = field(default_factory=lambda: DEFAULT_PROMPTS)
    colours: Mapping[str, ColourRule] = field(default_factory=lambda: DEFAULT_COLOURS)

    def prompt(self, outcome: str) -> str:
        """The prompt spoken for ``outcome`` (the default words where none is configured)."""
        return self.prompts.get(outcome) or DEFAULT_PROMPTS[outcome]


@dataclass(frozen=True)
class Decision:
    """An outcome and machine-readable reasons for a non-pass; ``colour`` is the health-code
    colour the decision saw (``None`` when there was none), for choosing the words."""

    outcome: Outcome
    reasons: tuple[str, ...]
    colour: str | None = None


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
    - a colour the site's table checks (or does not know), travel flag, positive NAT, a
      missing or failed source the policy needs, too few doses → check
    - otherwise the latest NAT is a negative older than the window → nat_expired
    - otherwise → pass

    A NAT exactly ``nat_window_hours`` old is still within the window. A ``stale`` check (a
    source's last-known value) is used like ``ok`` while it is at most ``max_stale_s`` old and
    is a failed source after that.
    """
    if checks is None or not credential_valid:
        return Decision(INVALID_CREDENTIAL, (invalid_reason,))
    checks = usable_checks(checks, max_stale_s)
    if all(r.status == "missing" for r in checks.by_name().values()):
        return Decision(CHECK, ("unknown_person",))
    colour = checks.health_code.value.colour if checks.health_code.value is not None else None
    reasons = [
        *_code_reasons(checks, site_policy),
        *_nat_reasons(checks, now, site_policy),
        *_dose_reasons(checks, site_policy),
        *_travel_reasons(checks),
    ]
    if not reasons:
        return Decision(PASS, (), colour)
    if reasons == ["nat_expired"]:
        return Decision(NAT_EXPIRED, tuple(reasons), colour)
    return Decision(CHECK, tuple(reasons), colour)


def _code_reasons(checks: Checks, site_policy: SitePolicy) -> list[str]:
    code = checks.health_code
    if code.status == "error":
        return ["source_error:health_code"]
    if code.value is None:
        return ["code_missing"]
    rule = site_policy.colours.get(code.value.colour)
    if rule is None:
        return [UNKNOWN_COLOUR_REASON]
    return [] if rule.passes else [rule.reason]


def _nat_reasons(checks: Checks, now: datetime, site_policy: SitePolicy) -> list[str]:
    nat = checks.nat
    if nat.status == "error":
        return ["source_error:nat"]
    if nat.value is None:
        return ["nat_missing"]
    if nat.value.result != "negative":
        return ["nat_positive"]
    if nat_age_hours(nat.value.sampled_at, now) > site_policy.nat_window_hours:
        return ["nat_expired"]
    return []


def _dose_reasons(checks: Checks, site_policy: SitePolicy) -> list[str]:
    if site_policy.min_doses <= 0:
        return []
    vac = checks.vaccination
    if vac.status == "error":
        return ["source_error:vaccination"]
    doses = vac.value.doses if vac.value is not None else 0
    return ["doses_below_minimum"] if doses < site_policy.min_doses else []


def _travel_reasons(checks: Checks) -> list[str]:
    travel = checks.travel
    if travel.status == "error":
        return ["source_error:travel"]
    if travel.value is None:
        return ["travel_missing"]
    return ["travel_flag"] if travel.value.flagged else []


def prompt_for(decision: Decision, site_policy: SitePolicy) -> str:
    """The words for ``decision``: the colour's own prompt where the colour decided it
    (a passing colour on a pass, a checking colour among the reasons of a check), otherwise
    the outcome's prompt."""
    rule = site_policy.colours.get(decision.colour) if decision.colour is not None else None
    if rule is not None and rule.prompt:
        if decision.outcome == PASS and rule.passes:
            return rule.prompt
        if decision.outcome == CHECK and not rule.passes and rule.reason in decision.reasons:
            return rule.prompt
    return site_policy.prompt(decision.outcome)


def policy_document(policy: SitePolicy) -> dict[str, Any]:
    """The numbers and colour table a kiosk decides with offline (snapshot and cache facts).

    Prompts are not part of it: the kiosk speaks its own configured words.
    """
    window = float(policy.nat_window_hours)
    doc: dict[str, Any] = {
        "nat_window_hours": int(window) if window.is_integer() else window,
        "min_doses": policy.min_doses,
    }
    if policy.colours != DEFAULT_COLOURS:
        doc["colours"] = {
            name: {"passes": rule.passes, "reason": rule.reason}
            for name, rule in sorted(policy.colours.items())
        }
    return doc


def policy_from_document(doc: Mapping[str, Any]) -> SitePolicy:
    """The inverse of :func:`policy_document` (defaults for absent keys)."""
    window = doc.get("nat_window_hours", DEFAULT_NAT_WINDOW_HOURS)
    doses = doc.get("min_doses", 0)
    if isinstance(window, bool) or not isinstance(window, int | float) or window <= 0:
        raise PolicyDocumentError(f"policy.nat_window_hours: {window!r}")
    if isinstance(doses, bool) or not isinstance(doses, int) or doses < 0:
        raise PolicyDocumentError(f"policy.min_doses: {doses!r}")
    colours = DEFAULT_COLOURS
    raw = doc.get("colours")
    if raw is not None:
        if not isinstance(raw, Mapping):
            raise PolicyDocumentError("policy.colours: must be an object")
        colours = MappingProxyType({str(k): _colour_rule(k, v) for k, v in raw.items()})
    return SitePolicy(nat_window_hours=float(window), min_doses=doses, colours=colours)


def _colour_rule(name: Any, raw: Any) -> ColourRule:
    if (
        not isinstance(raw, Mapping)
        or not isinstance(raw.get("passes"), bool)
        or not isinstance(raw.get("reason", ""), str)
    ):
        raise PolicyDocumentError(f"policy.colours.{name}: {raw!r}")
    return ColourRule(passes=raw["passes"], reason=raw.get("reason", "") or "code_not_green")
