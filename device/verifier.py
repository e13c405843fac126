"""Turns a credential into a decision within the tap's deadline, online or not.

The server is asked first; whatever it does (slow, black-holed, refusing, erroring), the tap
gets a decision by `deadline_s` after the credential completed. Without the server the kiosk
decides `check` (an unknown person offline) and marks the decision offline, so the guard and
the audit know the answer did not come from the four sources.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from device.client import ServerClient, ServerError, ServerRejected
from device.credentials import Credential
from device.privacy import pseudonym

log = logging.getLogger(__name__)

OUTCOMES = frozenset({"pass", "check", "nat_expired", "invalid_credential"})


@dataclass(frozen=True)
class Decision:
    """What the kiosk does about one tap."""

    tap_id: str
    outcome: str
    prompt: str
    offline: bool
    masked_id: str
    pseudonym: str
    reasons: tuple[str, ...] = ()
    cache_age_s: float | None = None
    error: str = ""
    checks: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Identity:
    tap_id: str
    masked_id: str
    pseudonym: str


class Verifier:
    """Asks the server under a deadline and falls back to a local decision."""

    def __init__(
        self,
        client: ServerClient,
        prompts: Callable[[str], str],
        fleet_key: bytes,
        deadline_s: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        today: Callable[[], dt.date] = dt.date.today,
    ) -> None:
        self._client = client
        self._prompt = prompts
        self._fleet_key = fleet_key
        self.deadline_s = deadline_s
        self._monotonic = monotonic
        self._today = today
        self._was_offline = False

    async def decide(self, cred: Credential, tap_id: str) -> Decision:
        """Never raises and never outlives the deadline (plus scheduling noise)."""
        alias = pseudonym(self._fleet_key, cred.id_number) if cred.id_number else ""
        common = _Identity(tap_id, cred.masked_id, alias)
        local = self._local_refusal(cred)
        if local is not None:
            return Decision(
                outcome="invalid_credential",
                prompt=self._prompt("invalid_credential"),
                offline=False,
                reasons=(local,),
                tap_id=common.tap_id,
                masked_id=common.masked_id,
                pseudonym=common.pseudonym,
            )
        remaining = self.deadline_s - (self._monotonic() - cred.completed_at)
        try:
            if remaining <= 0:
                raise TimeoutError("deadline already spent before the lookup")
            answer = await asyncio.wait_for(
                self._client.verify(
                    tap_id, cred.kind, cred.id_number, remaining, card_type=cred.card_type
                ),
                remaining,
            )
            outcome = answer.get("outcome")
            if outcome not in OUTCOMES:
                raise ValueError(f"server gave unknown outcome {outcome!r}")
        except (ServerError, TimeoutError, ValueError) as exc:
            return self._offline(cred, common, exc)
        if self._was_offline:
            log.info("server answering again")
            self._was_offline = False
        reasons = answer.get("reasons")
        checks = answer.get("checks")
        # The site's prompt text comes from the server; the kiosk speaks it once rendered and
        # its own clip for the outcome until then (the voice never waits for synthesis).
        prompt = answer.get("prompt")
        if not isinstance(prompt, str) or not 0 < len(prompt) <= 100:
            prompt = self._prompt(str(outcome))
        return Decision(
            outcome=str(outcome),
            prompt=prompt,
            offline=False,
            reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
            checks=checks if isinstance(checks, dict) else {},
            tap_id=common.tap_id,
            masked_id=common.masked_id,
            pseudonym=common.pseudonym,
        )

    def _local_refusal(self, cred: Credential) -> str | None:
        if not cred.readable:
            return "unreadable_card"
        if not cred.checksum_ok:
            return "bad_checksum"
        if cred.expired(self._today()):
            return "card_expired"
        return None

    def _offline(self, cred: Credential, common: _Identity, exc: BaseException) -> Decision:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if not self._was_offline:
            log.warning("deciding offline: %s", error)
            self._was_offline = True
        reason = "server_refused" if isinstance(exc, ServerRejected) else "server_unavailable"
        return Decision(
            outcome="check",
            prompt=self._prompt("check"),
            offline=True,
            reasons=(reason, "unknown_person"),
            error=error,
            tap_id=common.tap_id,
            masked_id=common.masked_id,
            pseudonym=common.pseudonym,
        )
