"""Table-driven tests of the pure policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from core.checks import Checks, HealthCode, NatResult, SourceResult, Travel, Vaccination
from core.outcomes import DEFAULT_PROMPTS, Outcome
from core.policy import (
    DEFAULT_COLOURS,
    ColourRule,
    SitePolicy,
    decide,
    policy_document,
    policy_from_document,
    prompt_for,
)

NOW = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)
OK: Any = "ok"
MISSING: Any = "missing"
ERROR: Any = "error"


@dataclass(frozen=True)
class Person:
    colour: str | Any = "green"
    nat: str | Any = "negative"
    nat_age_h: float = 10.0
    doses: int | Any = 2
    flagged: bool | Any = False
    policy: SitePolicy = field(default_factory=SitePolicy)

    def checks(self) -> Checks:
        def wrap(value: object, status: object) -> SourceResult[Any]:
            if status is MISSING:
                return SourceResult.missing()
            if status is ERROR:
                return SourceResult.failed("timeout")
            return SourceResult.ok(value)

        return Checks(
            wrap(HealthCode(str(self.colour), "", NOW), self.colour),
            wrap(NatResult(str(self.nat), NOW - timedelta(hours=self.nat_age_h), "lab"), self.nat),
            wrap(Vaccination(self.doses, date(2022, 1, 10)), self.doses),
            wrap(Travel(self.flagged is True, "", NOW), self.flagged),
        )


MIN2 = SitePolicy(min_doses=2)
WIN24 = SitePolicy(nat_window_hours=24)

CASES = [
    ("all good", Person(), "pass", []),
    ("yellow", Person(colour="yellow"), "check", ["code_not_green"]),
    ("red", Person(colour="red"), "check", ["code_not_green"]),
    ("no code", Person(colour=MISSING), "check", ["code_missing"]),
    ("code source down", Person(colour=ERROR), "check", ["source_error:health_code"]),
    ("positive NAT", Person(nat="positive"), "check", ["nat_positive"]),
    ("old positive NAT", Person(nat="positive", nat_age_h=100), "check", ["nat_positive"]),
    ("no NAT", Person(nat=MISSING), "check", ["nat_missing"]),
    ("NAT source down", Person(nat=ERROR), "check", ["source_error:nat"]),
    ("NAT exactly at window", Person(nat_age_h=48), "pass", []),
    ("NAT a second past window", Person(nat_age_h=48 + 1 / 3600), "nat_expired", ["nat_expired"]),
    ("NAT old", Person(nat_age_h=72), "nat_expired", ["nat_expired"]),
    ("travel flag", Person(flagged=True), "check", ["travel_flag"]),
    ("no travel record", Person(flagged=MISSING), "check", ["travel_missing"]),
    ("travel source down", Person(flagged=ERROR), "check", ["source_error:travel"]),
    ("no vaccination, min 0", Person(doses=MISSING), "pass", []),
    ("vaccination down, min 0", Person(doses=ERROR), "pass", []),
    ("2 doses, min 2", Person(doses=2, policy=MIN2), "pass", []),
    ("1 dose, min 2", Person(doses=1, policy=MIN2), "check", ["doses_below_minimum"]),
    ("no doses, min 2", Person(doses=MISSING, policy=MIN2), "check", ["doses_below_minimum"]),
    (
        "vaccination down, min 2",
        Person(doses=ERROR, policy=MIN2),
        "check",
        ["source_error:vaccination"],
    ),
    ("site window 24 h", Person(nat_age_h=30, policy=WIN24), "nat_expired", ["nat_expired"]),
    ("site window 24 h, fresh", Person(nat_age_h=23, policy=WIN24), "pass", []),
    (
        "yellow and expired",
        Person(colour="yellow", nat_age_h=72),
        "check",
        ["code_not_green", "nat_expired"],
    ),
    (
        "expired and flagged",
        Person(nat_age_h=72, flagged=True),
        "check",
        ["nat_expired", "travel_flag"],
    ),
    (
        "unknown person",
        Person(colour=MISSING, nat=MISSING, doses=MISSING, flagged=MISSING),
        "check",
        ["unknown_person"],
    ),
    (
        "everything down",
        Person(colour=ERROR, nat=ERROR, doses=ERROR, flagged=ERROR),
        "check",
        ["source_error:health_code", "source_error:nat", "source_error:travel"],
    ),
]


@pytest.mark.parametrize(("name", "person", "outcome", "reasons"), CASES, ids=[c[0] for c in CASES])
def test_decide(name: str, person: Person, outcome: str, reasons: list[str]) -> None:
    decision = decide(person.checks(), NOW, person.policy)
    assert decision.outcome == outcome
    assert list(decision.reasons) == reasons
    assert prompt_for(decision, person.policy) == DEFAULT_PROMPTS[outcome]


def test_invalid_credential() -> None:
    decision = decide(None, NOW, SitePolicy())
    assert (decision.outcome, decision.reasons) == ("invalid_credential", ("bad_checksum",))
    assert prompt_for(decision, SitePolicy()) == "证件无效，请重新刷卡"
    assert decide(Person().checks(), NOW, SitePolicy(), credential_valid=False).outcome == (
        "invalid_credential"
    )


def test_site_prompts() -> None:
    policy = SitePolicy(prompts={**DEFAULT_PROMPTS, "pass": "Please pass"})
    assert prompt_for(decide(Person().checks(), NOW, policy), policy) == "Please pass"


FOUR_COLOURS = SitePolicy(
    colours={
        **DEFAULT_COLOURS,
        "blue": ColourRule(passes=True, prompt="蓝码通行"),
        "yellow": ColourRule(passes=False, reason="code_yellow", prompt="黄码请核查"),
    }
)


def test_decide_never_reads_prompts() -> None:
    """Presentation comes after the decision: a policy without a single prompt decides."""
    bare = SitePolicy(prompts={})
    for person in (Person(), Person(colour="red"), Person(colour="purple")):
        assert decide(person.checks(), NOW, bare) == decide(person.checks(), NOW, SitePolicy())


@pytest.mark.parametrize(
    ("colour", "outcome", "reasons", "prompt"),
    [
        ("green", Outcome.PASS, [], "绿码通行"),
        ("blue", Outcome.PASS, [], "蓝码通行"),
        ("yellow", Outcome.CHECK, ["code_yellow"], "黄码请核查"),
        ("red", Outcome.CHECK, ["code_not_green"], "非绿码请核查"),
        ("purple", Outcome.CHECK, ["code_colour_unknown"], "非绿码请核查"),
    ],
)
def test_colour_table(colour: str, outcome: Outcome, reasons: list[str], prompt: str) -> None:
    decision = decide(Person(colour=colour).checks(), NOW, FOUR_COLOURS)
    assert (decision.outcome, list(decision.reasons)) == (outcome, reasons)
    assert prompt_for(decision, FOUR_COLOURS) == prompt


def test_colour_prompt_only_when_the_colour_decided() -> None:
    """A blue code with a travel flag checks: the colour's pass words would be wrong."""
    decision = decide(Person(colour="blue", flagged=True).checks(), NOW, FOUR_COLOURS)
    assert decision.outcome == Outcome.CHECK
    assert prompt_for(decision, FOUR_COLOURS) == DEFAULT_PROMPTS["check"]


def test_default_table_is_todays_behaviour_and_unknown_colours_check() -> None:
    assert decide(Person(colour="yellow").checks(), NOW, SitePolicy()).reasons == (
        "code_not_green",
    )
    assert decide(Person(colour="blue").checks(), NOW, SitePolicy()).outcome == Outcome.CHECK


def test_policy_document_round_trip_keeps_the_colour_table() -> None:
    """The kiosk decides offline from this document: it must decide as the server does."""
    again = policy_from_document(policy_document(FOUR_COLOURS))
    for colour in ("green", "blue", "yellow", "red", "purple"):
        checks = Person(colour=colour).checks()
        assert decide(checks, NOW, again) == decide(checks, NOW, FOUR_COLOURS)
    assert "colours" not in policy_document(SitePolicy())
