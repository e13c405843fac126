"""Four-in-one verification: concurrent source fan-out, policy, response document."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core import idnumbers as identity
from core.checks import SOURCE_NAMES, Checks, SourceResult
from core.policy import (
    CHECK,
    DEFAULT_MAX_STALE_S,
    Decision,
    SitePolicy,
    decide,
    nat_age_hours,
    policy_document,
    prompt_for,
    usable_checks,
)
from server.metrics.instruments import VerifyMeter
from server.verify.qr import TokenResolver
from server.verify.resilience import ResilientSource, group_sources


@dataclass(frozen=True)
class Verification:
    """The result of one verify: the decision and the checks it was made from."""

    decision: Decision
    checks: Checks | None
    masked_id: str


class Verifier:
    """Looks a person up in every source at once.

    Each source is a :class:`~server.verify.resilience.ResilientSource`: bounded by its own timeout,
    answering its last-known value (``stale``) or ``error`` when it fails, logging once on
    failure and once on recovery. A failing source never fails the request; a stale value
    older than ``max_stale_s`` counts as an error (and the policy answers ``check``).

    ``resolver`` maps QR tokens to ID numbers (:meth:`verify_token`); without one every token
    is unknown. Each decision's time goes to /metrics by outcome (:class:`VerifyMeter`).
    """

    def __init__(
        self,
        sources: Sequence[ResilientSource],
        *,
        max_stale_s: float = DEFAULT_MAX_STALE_S,
        resolver: TokenResolver | None = None,
    ) -> None:
        self.sources = {s.name: s for s in sources}
        self.max_stale_s = max_stale_s
        self.resolver = resolver
        self._groups, self._alone = group_sources(list(self.sources.values()))
        self._meter = VerifyMeter()

    async def verify(
        self,
        id_number: str,
        now: datetime,
        site_policy: SitePolicy,
        *,
        card_type: str = "resident",
    ) -> Verification:
        """Decide for ``id_number`` (as read from the credential) under ``site_policy``.

        ``card_type`` ``I`` (2017 foreigner permanent-residence card) takes a 15-character
        permit number; every other type an 18-character GB 11643 number.
        """
        started = time.perf_counter()
        result = await self._decide(id_number, now, site_policy, card_type)
        self._meter.observe(result.decision.outcome, time.perf_counter() - started)
        return result

    async def _decide(
        self, id_number: str, now: datetime, site_policy: SitePolicy, card_type: str
    ) -> Verification:
        number = identity.normalise(id_number)
        masked = identity.mask(number)
        if not identity.credential_ok(number, card_type):
            return Verification(decide(None, now, site_policy), None, masked)
        results = await self._lookup(number)
        checks = usable_checks(
            Checks(*(results.get(name) or _NOT_CONFIGURED for name in SOURCE_NAMES)),
            self.max_stale_s,
        )
        decision = decide(checks, now, site_policy, max_stale_s=self.max_stale_s)
        return Verification(decision, checks, masked)

    async def verify_token(
        self, token: str, now: datetime, site_policy: SitePolicy
    ) -> Verification:
        """Decide for the person a QR token resolves to.

        Resolved → exactly :meth:`verify` of the number (``masked_id`` is the masked resolved
        number). Unknown, expired, foreign or garbage → ``invalid_credential`` with reason
        ``unknown_qr``. The resolver failing → ``check`` with ``source_error:health_code``
        (the code may be good; a guard decides). ``masked_id`` is empty when unresolved.
        """
        started = time.perf_counter()
        result = await self._decide_token(token, now, site_policy)
        self._meter.observe(result.decision.outcome, time.perf_counter() - started)
        return result

    async def _decide_token(
        self, token: str, now: datetime, site_policy: SitePolicy
    ) -> Verification:
        if self.resolver is None:
            return Verification(
                decide(None, now, site_policy, invalid_reason="unknown_qr"), None, ""
            )
        resolution = await self.resolver.resolve(token, now)
        if resolution.status == "ok":
            number = resolution.id_number
            card_type = "I" if identity.is_permit_number(number) else "resident"
            return await self._decide(number, now, site_policy, card_type)
        if resolution.status == "error":
            reasons = ("source_error:health_code",)
            return Verification(Decision(CHECK, reasons), None, "")
        return Verification(decide(None, now, site_policy, invalid_reason="unknown_qr"), None, "")

    async def _lookup(self, id_number: str) -> dict[str, SourceResult[Any]]:
        """Every configured source's answer: each group of local sources in one statement,
        every other source on its own, all at once (no task when there is one group only)."""
        if not self._alone and len(self._groups) == 1:
            return await self._groups[0].lookup(id_number)
        parts = await asyncio.gather(
            *(g.lookup(id_number) for g in self._groups),
            *(self._single(s, id_number) for s in self._alone),
        )
        results: dict[str, SourceResult[Any]] = {}
        for part in parts:
            results.update(part)
        return results

    @staticmethod
    async def _single(source: ResilientSource, id_number: str) -> dict[str, SourceResult[Any]]:
        return {source.name: await source.lookup(id_number)}


_NOT_CONFIGURED: SourceResult[Any] = SourceResult.failed("not_configured")


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def check_document(
    name: str, result: SourceResult[Any], now: datetime, site_policy: SitePolicy
) -> dict[str, Any]:
    """Render one check as in docs/api.md.

    A ``stale`` result (a last-known value the policy accepted) reads ``status: "ok"`` with
    ``stale: true``, its ``age_s`` and the source's ``error``.
    """
    doc: dict[str, Any] = {"status": result.status}
    if result.status == "error":
        doc["error"] = result.error
    elif result.status == "stale":
        age = result.age_s or 0.0
        doc.update(status="ok", stale=True, age_s=round(age, 1), error=result.error)
    value = result.value
    if name == "health_code":
        if value is not None:
            doc.update(colour=value.colour, reason=value.reason, updated_at=_iso(value.updated_at))
        colours = policy_document(site_policy).get("colours")
        if colours is not None:
            doc["colours"] = colours
    elif name == "nat":
        if value is not None:
            age = nat_age_hours(value.sampled_at, now)
            doc.update(result=value.result, sampled_at=_iso(value.sampled_at))
            doc["age_hours"] = round(age, 2)
        window = float(site_policy.nat_window_hours)
        doc["window_hours"] = int(window) if window.is_integer() else window
    elif name == "vaccination":
        if value is not None:
            last = value.last_dose_at
            doc.update(doses=value.doses, last_dose_at=last.isoformat() if last else None)
        elif result.status == "missing":
            doc.update(doses=0, last_dose_at=None)
        doc["min_doses"] = site_policy.min_doses
    elif name == "travel" and value is not None:
        doc.update(flagged=value.flagged, area=value.area)
    return doc


def verify_response(
    tap_id: str, site: str, verification: Verification, now: datetime, site_policy: SitePolicy
) -> dict[str, Any]:
    """Build the ``POST /v1/verify`` response body."""
    checks: dict[str, Any] = {}
    if verification.checks is not None:
        for name, result in verification.checks.by_name().items():
            checks[name] = check_document(name, result, now, site_policy)
    decision = verification.decision
    return {
        "tap_id": tap_id,
        "outcome": decision.outcome,
        "prompt": prompt_for(decision, site_policy),
        "masked_id": verification.masked_id,
        "site": site,
        "reasons": list(decision.reasons),
        "checks": checks,
        "server_time": _iso(now),
    }
