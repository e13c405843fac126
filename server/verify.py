"""Four-in-one verification: concurrent source fan-out, policy, response document."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server import identity
from server.checks import SOURCE_NAMES, Checks, SourceResult
from server.config import SitePolicy
from server.policy import Decision, decide, nat_age_hours
from server.sources import SourceAdapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verification:
    """The result of one verify: the decision and the checks it was made from."""

    decision: Decision
    checks: Checks | None
    masked_id: str


class Verifier:
    """Looks a person up in every source at once, each bounded by ``timeout_s``.

    A source that raises or times out becomes ``status: error`` (and the policy answers
    ``check``); it never fails the request. Failures are logged once when a source starts
    failing and once when it recovers.
    """

    def __init__(self, sources: Sequence[SourceAdapter], timeout_s: float) -> None:
        self._sources = {s.name: s for s in sources}
        self._timeout_s = timeout_s
        self._failing: set[str] = set()

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
        number = identity.normalise(id_number)
        masked = identity.mask(number)
        if not identity.credential_ok(number, card_type):
            return Verification(decide(None, now, site_policy), None, masked)
        results = await asyncio.gather(*(self._one(name, number, masked) for name in SOURCE_NAMES))
        checks = Checks(*results)
        return Verification(decide(checks, now, site_policy), checks, masked)

    async def _one(self, name: str, id_number: str, masked: str) -> SourceResult[Any]:
        source = self._sources.get(name)
        if source is None:
            return SourceResult.failed("not_configured")
        try:
            result: SourceResult[Any] = await asyncio.wait_for(
                source.lookup(id_number), self._timeout_s
            )
        except TimeoutError:
            self._failed(name, f"timed out after {self._timeout_s} s", masked)
            return SourceResult.failed("timeout")
        except Exception as exc:
            self._failed(name, f"{type(exc).__name__}: {exc}", masked)
            return SourceResult.failed("failed")
        if name in self._failing:
            self._failing.discard(name)
            log.info("source %s recovered", name)
        return result

    def _failed(self, name: str, why: str, masked: str) -> None:
        if name not in self._failing:
            self._failing.add(name)
            log.warning("source %s failing (lookup of %s): %s", name, masked, why)
        else:
            log.debug("source %s still failing (lookup of %s): %s", name, masked, why)


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def check_document(
    name: str, result: SourceResult[Any], now: datetime, site_policy: SitePolicy
) -> dict[str, Any]:
    """Render one check as in docs/api.md."""
    doc: dict[str, Any] = {"status": result.status}
    if result.status == "error":
        doc["error"] = result.error
    value = result.value
    if name == "health_code" and value is not None:
        doc.update(colour=value.colour, reason=value.reason, updated_at=_iso(value.updated_at))
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
        "prompt": decision.prompt,
        "masked_id": verification.masked_id,
        "site": site,
        "reasons": list(decision.reasons),
        "checks": checks,
        "server_time": _iso(now),
    }
