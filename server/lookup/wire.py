"""``POST /v1/guard/lookup`` bodies as typed ``msgspec`` structs (decoded, encoded and put in
the OpenAPI document from the same types)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from core.wire import Amount, Count, IdNumberText, Outcome, Timestamp
from server.lookup.texts import Lang

PhoneText = Annotated[
    str,
    Meta(
        max_length=32,
        description="a mainland mobile number (+86 optional, blanks and dashes allowed) or "
        "+ and the country code",
    ),
]
SiteName = Annotated[str, Meta(min_length=1, max_length=100)]
Status = Literal["ok", "missing", "error"]
#: ``local``: the server's own tables (with history); ``upstream``: an HTTP source, which
#: gives the latest value only.
Origin = Literal["local", "upstream"]


class LookupRequest(Struct, kw_only=True):
    """Exactly one of ``id_number`` and ``phone``. ``site``: which site's policy decides
    (required for an admin or a guard of several sites; a guard's only site otherwise).
    ``lang``: the language of the recovery texts."""

    id_number: IdNumberText | None = None
    phone: PhoneText | None = None
    site: SiteName | None = None
    lang: Lang = "zh-CN"


class RecoveryText(Struct):
    """How to get back to a pass from one failing reason."""

    reason: str
    text: str


class _Facts(Struct, kw_only=True):
    """What every source's part says: how the verifier got it (``stale``: the source failed
    and this is its last-known value, ``age_s`` old) and where it comes from."""

    status: Status
    origin: Origin
    error: str | None = None
    stale: bool = False
    age_s: Amount | None = None


class HealthCodeFacts(_Facts, kw_only=True):
    """The health-code colour and the reason the issuer gave for it."""

    colour: str | None = None
    reason: str | None = None
    updated_at: Timestamp | None = None


class NatSample(Struct):
    """One nucleic-acid test; ``age_hours`` at the time of the lookup."""

    result: str
    sampled_at: Timestamp
    age_hours: float
    lab: str


class NatFacts(_Facts, kw_only=True):
    """The latest NAT results, newest first (only the latest from an upstream)."""

    window_hours: float
    results: list[NatSample] = []


class Dose(Struct):
    """One vaccine dose (``vaccine`` empty when unknown)."""

    dose: Count
    date: str
    vaccine: str = ""


class VaccinationFacts(_Facts, kw_only=True):
    """Doses received and, from the local tables, each dose's date."""

    min_doses: Count
    doses: Count = 0
    last_dose_at: str | None = None
    history: list[Dose] = []


class TravelFlag(Struct):
    """Whether travel flags the person, the area that did and when it was recorded."""

    flagged: bool
    area: str
    updated_at: Timestamp | None = None


class TravelFacts(_Facts, kw_only=True):
    """The travel record(s) (one per person in the local table)."""

    flagged: bool = False
    flags: list[TravelFlag] = []


class LookupChecks(Struct):
    """The four sources behind the decision."""

    health_code: HealthCodeFacts
    nat: NatFacts
    vaccination: VaccinationFacts
    travel: TravelFacts


class LookupAnswer(Struct):
    """The outcome this person would get at ``site`` now, why, and how to get back to a pass
    (one text per failing reason, in the order of ``reasons``)."""

    outcome: Outcome
    prompt: str
    reasons: list[str]
    recovery: list[RecoveryText]
    checks: LookupChecks
    masked_id: str
    site: str
    by: Literal["id", "phone"]
    looked_up_at: Timestamp
