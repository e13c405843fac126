"""Turns a credential into a decision within the tap's deadline, online or not.

The server is asked first; whatever it does (slow, black-holed, refusing, erroring), the tap
gets a decision by `deadline_s` after the credential completed. Without the server the kiosk
decides from its pseudonymised cache with the same pure policy the server uses, recomputing
NAT age at tap time, and marks the decision offline with the cache age; a person it knows
nothing about is `check`. After repeated failures a circuit breaker stops waiting for a dead
server altogether, so taps during an outage decide at cache speed; a background probe closes
it again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from core import wire
from core.idnumbers import pseudonym
from core.outcomes import is_decision
from core.passes import PassCheck, ReplayGuard, is_pass, verify_pass
from device.deciding.cache import KioskCache, facts_from_checks
from device.deciding.clock import ClockTrust, server_datetime
from device.deciding.fallback import decide_offline
from device.errors import CacheError, FactsError, ServerError, ServerRejected
from device.link.breaker import CircuitBreaker
from device.link.client import ServerClient
from device.sources.credentials import Credential

log = logging.getLogger(__name__)

# How long a cache lookup may take when the deadline is already spent (DESIGN: ≤ 50 ms).
_CACHE_BUDGET_S = 0.05


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
    clock_trusted: bool = True


@dataclass(frozen=True)
class _Identity:
    tap_id: str
    masked_id: str
    pseudonym: str


class Verifier:
    """Asks the server under a deadline and falls back to the cache."""

    def __init__(
        self,
        client: ServerClient,
        prompts: Callable[[str], str],
        site_key: bytes,
        deadline_s: float,
        *,
        cache: KioskCache | None = None,
        breaker: CircuitBreaker | None = None,
        clock: ClockTrust | None = None,
        server_key_hex: str = "",
        site: str = "",
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prompt = prompts
        self._site_key = site_key
        self.deadline_s = deadline_s
        self.cache = cache
        self.breaker = breaker or CircuitBreaker()
        self.clock = clock or ClockTrust()
        self._monotonic = monotonic
        self._wall = wall
        self._server_key = server_key_hex
        self._site = site
        self._replay = ReplayGuard()
        self._was_offline = False
        self._last_refusal = ""
        self._background: set[asyncio.Task[None]] = set()

    def _pseudonym_for(self, id_number: str) -> str:
        return pseudonym(self._site_key, id_number)

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self._wall(), dt.UTC).astimezone().date()

    async def decide(self, cred: Credential, tap_id: str) -> Decision:
        """Never raises and never outlives the deadline (plus scheduling noise)."""
        alias = self._pseudonym_for(cred.id_number) if cred.id_number else ""
        ident = _Identity(tap_id, cred.masked_id, alias)
        local = self._local_refusal(cred)
        if local is not None:
            return self._decision(ident, "invalid_credential", False, (local,))
        if cred.kind == "qr" and is_pass(cred.token):
            return await self._signed_pass(ident, cred)
        if not self.breaker.allow():
            return await self._fallback(ident, cred, ["circuit_open"], "circuit open")
        return await self._ask_server(ident, cred)

    async def _ask_server(self, ident: _Identity, cred: Credential) -> Decision:
        """The server's decision within what is left of the deadline, or the cache's."""
        remaining = self.deadline_s - (self._monotonic() - cred.completed_at)
        asked = self._monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError("deadline already spent before the lookup")
            answer = await asyncio.wait_for(
                self._client.lookup(
                    ident.tap_id,
                    cred.kind,
                    cred.id_number,
                    remaining,
                    card_type=cred.card_type,
                    token=cred.token,
                ),
                remaining,
            )
        except ServerRejected as exc:
            return self._refused(ident, exc)
        except (ServerError, TimeoutError, ValueError) as exc:
            self.breaker.failure()
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if not self._was_offline:
                log.warning("deciding offline: %s", error)
                self._was_offline = True
            return await self._fallback(ident, cred, ["server_unavailable"], error)
        return self._online(ident, cred, answer, self._monotonic() - asked)

    def _refused_once(self, exc: ServerRejected) -> None:
        """Log a refusal once per kind (a cut-off kiosk is refused on every tap)."""
        if exc.error != self._last_refusal:
            log.error("server refused the lookup: %s", exc)
        self._last_refusal = exc.error

    def _refused(self, ident: _Identity, exc: ServerRejected) -> Decision:
        """The server is there and refuses this kiosk or this request (revoked, quarantined,
        not enrolled, malformed): the cache must not open the gate for a kiosk that has been
        cut off, and a refusal is not an outage for the breaker."""
        self._refused_once(exc)
        reason = f"server_refused:{exc.error or exc.status}"
        return self._decision(ident, "check", False, (reason,), error=str(exc))

    def _online(
        self, ident: _Identity, cred: Credential, answer: wire.VerifyResponse, round_trip_s: float
    ) -> Decision:
        """The server's answer (already checked against the API) as the tap's decision."""
        self.breaker.success()
        self._last_refusal = ""
        if self._was_offline:
            log.info("server answering again")
            self._was_offline = False
        self.clock.observe_server_time(answer.server_time, round_trip_s)
        expiry = self._expiry_on_server_time(cred, answer.server_time)
        if expiry is not None:
            return self._decision(ident, expiry[0], False, (expiry[1],))
        checks: dict[str, Any] = msgspec.to_builtins(answer.checks)
        if ident.pseudonym and self.cache is not None and answer.outcome != "invalid_credential":
            self._remember(ident.pseudonym, checks, answer.server_time)
        # The site's prompt text comes from the server; the kiosk speaks it once rendered and
        # its own clip for the outcome until then (the voice never waits for synthesis).
        prompt = answer.prompt
        if not 0 < len(prompt) <= 100:
            prompt = self._prompt(answer.outcome)
        # For a QR code the server resolved the code to a person: its masked number counts.
        masked = answer.masked_id if cred.kind == "qr" else ident.masked_id
        return Decision(
            tap_id=ident.tap_id,
            outcome=answer.outcome,
            prompt=prompt,
            offline=False,
            masked_id=masked,
            pseudonym=ident.pseudonym,
            reasons=tuple(answer.reasons),
            checks=checks,
            clock_trusted=self.clock.trusted(),
        )

    def _decision(
        self,
        ident: _Identity,
        outcome: str,
        offline: bool,
        reasons: tuple[str, ...],
        *,
        error: str = "",
        cache_age_s: float | None = None,
    ) -> Decision:
        return Decision(
            tap_id=ident.tap_id,
            outcome=outcome,
            prompt=self._prompt(outcome),
            offline=offline,
            masked_id=ident.masked_id,
            pseudonym=ident.pseudonym,
            reasons=reasons,
            error=error,
            cache_age_s=cache_age_s,
            clock_trusted=self.clock.trusted(),
        )

    def _expiry_on_server_time(self, cred: Credential, server_time: str) -> tuple[str, str] | None:
        """(outcome, reason) when the card's validity overrides the server's answer.

        The server never sees the card's end date, so the kiosk judges it, on the server's
        time: the kiosk's own clock may be hours off, and then it must not decide a date.
        """
        if not cred.expires:
            return None
        server = server_datetime(server_time)
        if server is None:  # the wire model checks the format; a clock is still needed
            return ("check", "clock_untrusted") if not self.clock.trusted() else None
        if cred.expired(server.astimezone().date()):
            return "invalid_credential", "card_expired"
        return None

    def _local_refusal(self, cred: Credential) -> str | None:
        if not cred.readable:
            return "unreadable_qr" if cred.kind == "qr" else "unreadable_card"
        if cred.kind == "qr":
            return None if cred.token else "empty_qr"
        if not cred.checksum_ok:
            return "bad_checksum"
        if self.clock.trusted() and cred.expired(self._today()):
            return "card_expired"
        return None

    # -- signed offline passes ---------------------------------------------------------------
    async def _signed_pass(self, ident: _Identity, cred: Credential) -> Decision:
        """A pass the server signed for a person: checked here, with or without the server.

        Once the pass checks out here, a reachable server is asked to claim its nonce within
        what is left of the deadline, so the same pass is refused at every other kiosk; a
        server that is down (or an open breaker) leaves this kiosk's own memory as the only
        guard (docs/passes.md).
        """
        if not self._server_key:
            return self._decision(ident, "invalid_credential", False, ("pass_key_missing",))
        trusted = self.clock.trusted()
        check = verify_pass(
            cred.token,
            self._server_key,
            now=self._wall(),
            clock_trusted=trusted,
            site=self._site,
            seen=self._replay,
        )
        ident = _Identity(ident.tap_id, check.masked_id or "", check.pseudonym or "")
        if not check.ok:
            # Without a trusted clock a pass cannot be judged: a guard checks the person.
            outcome = "check" if check.reason == "clock_untrusted" else "invalid_credential"
            return self._decision(ident, outcome, True, (f"pass_{check.reason}",))
        outcome = check.outcome if is_decision(check.outcome) else "check"
        claimed = await self._claim_pass(check, cred)
        if claimed == "replayed":
            return self._decision(ident, "invalid_credential", False, ("pass_replayed",))
        if claimed == "refused":
            return self._decision(ident, "check", False, ("pass_claim_refused",))
        if claimed == "claimed":
            return self._decision(ident, outcome, False, ("signed_pass", "pass_claimed"))
        return self._decision(ident, outcome, True, ("signed_pass", f"pass_claim_{claimed}"))

    async def _claim_pass(self, check: PassCheck, cred: Credential) -> str:
        """``claimed``, ``replayed`` (used at another kiosk), ``refused`` (this kiosk is cut
        off), or why the server was not asked: ``offline`` (breaker open), ``unavailable``,
        ``unsupported`` (a server without the route)."""
        if not self.breaker.allow():
            return "offline"
        remaining = self.deadline_s - (self._monotonic() - cred.completed_at)
        try:
            if remaining <= 0 or check.expires_at is None:
                raise TimeoutError("deadline already spent before the pass claim")
            await asyncio.wait_for(
                self._client.claim_pass(check.nonce, check.expires_at, remaining), remaining
            )
        except ServerRejected as exc:
            if exc.status == 409 and exc.error == "replay":
                log.warning("pass refused: already used at another kiosk")
                return "replayed"
            if exc.status == 404:
                return "unsupported"
            self._refused_once(exc)
            return "refused"
        except (ServerError, TimeoutError, ValueError) as exc:
            self.breaker.failure()
            log.info("pass claim not made, deciding on this kiosk's memory: %s", exc)
            return "unavailable"
        self.breaker.success()
        return "claimed"

    # -- the cache -------------------------------------------------------------------------
    def _remember(self, alias: str, checks: Mapping[str, Any], server_time: Any) -> None:
        """Store the answer's facts after the tap, off its critical path."""
        facts = facts_from_checks(checks)
        if facts is None or self.cache is None:
            return
        server = server_datetime(server_time)
        fetched_at = server.timestamp() if server is not None else self._wall()
        # A last-known value the server fell back on is as old as it says, not "now".
        stale_ages = [
            float(c["age_s"])
            for c in checks.values()
            if isinstance(c, Mapping) and c.get("stale") and isinstance(c.get("age_s"), int | float)
        ]
        fetched_at -= max(stale_ages, default=0.0)
        task = asyncio.create_task(self._put(alias, facts, fetched_at))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _put(self, alias: str, facts: dict[str, Any], fetched_at: float) -> None:
        assert self.cache is not None
        try:
            await self.cache.put(alias, facts, fetched_at)
        except CacheError as exc:
            log.error("could not cache a verify answer: %s", exc)

    async def flush(self) -> None:
        """Wait for pending cache writes (shutdown, tests)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _fallback(
        self, ident: _Identity, cred: Credential, reasons: list[str], error: str
    ) -> Decision:
        trusted = self.clock.trusted()
        if not trusted and cred.expires:
            # Neither the server's time nor a trusted clock of our own: whether the card is
            # still valid cannot be known, whatever the cache says about the person.
            return self._decision(ident, "check", True, (*reasons, "clock_untrusted"), error=error)
        if self.cache is None or not ident.pseudonym:
            return self._decision(ident, "check", True, (*reasons, "unknown_person"), error=error)
        remaining = self.deadline_s - (self._monotonic() - cred.completed_at)
        try:
            cached = await asyncio.wait_for(
                self.cache.get(ident.pseudonym, self._wall()), max(remaining, _CACHE_BUDGET_S)
            )
        except (CacheError, TimeoutError) as exc:
            log.error("kiosk cache unavailable: %s", exc)
            return self._decision(
                ident, "check", True, (*reasons, "cache_unavailable"), error=error
            )
        if cached is None:
            return self._decision(ident, "check", True, (*reasons, "unknown_person"), error=error)
        now = dt.datetime.fromtimestamp(self._wall(), dt.UTC)
        try:
            outcome, why = decide_offline(cached.facts, now, clock_trusted=trusted)
        except FactsError as exc:
            log.error("cached facts unusable: %s", exc)
            return self._decision(ident, "check", True, (*reasons, "cache_corrupt"), error=error)
        age = cached.age_s(self._wall()) if trusted else None
        return self._decision(
            ident,
            outcome,
            True,
            (*reasons, f"cache:{cached.origin}", *why),
            error=error,
            cache_age_s=round(age, 1) if age is not None else None,
        )

    # -- recovery --------------------------------------------------------------------------
    async def probe_loop(self, interval_s: float = 0.5) -> None:
        """While the circuit is open, ask the server for its health when a probe is due.

        Each round also samples the clock, so a step while nobody taps (offline at night)
        withdraws trust before the next event is stamped, not at the next decision.
        """
        while True:
            await asyncio.sleep(interval_s)
            self.clock.sample()
            if not self.breaker.probe_due():
                continue
            try:
                answer = await self._client.health(timeout_s=min(self.deadline_s, 2.0))
            except ServerError:
                self.breaker.failure()
                continue
            self.breaker.success()
            server_time = answer.get("server_time")
            if isinstance(server_time, str):
                self.clock.observe_server_time(server_time)
