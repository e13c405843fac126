"""The self-test tap a release on trial must pass before it is committed.

A synthetic ID card goes through the real decision path: the verifier asks the server
(session, request, the answer checked against the API, the policy) or, when the server is
unreachable, decides from the cache, exactly as for a citizen. Nothing is actuated: the gate
is not pulsed and nothing is spoken; the result is journalled as a system event (with no
number, not even masked). The card's area code ``999999`` belongs to no one, so no person's
facts are ever looked up.

It fails when deciding raises, when the outcome is not a decision, when the server refuses
the request itself (a malformed lookup: not a revoked kiosk, which is no fault of the
release), and when the lookup fails although the server answers its health probe (the new
release cannot talk to the server it runs against). An unreachable server is not the
release's fault: the offline decision then counts. The hardware (reader, GPIO, audio) is
``kiosk doctor``'s, run by the boot guard before this agent started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from core.idnumbers import SELF_TEST_AREA, make_id_number
from core.outcomes import is_decision
from device.deciding.verifier import Decision, Verifier
from device.errors import ServerError
from device.sources.credentials import Credential

#: A well-formed number of an area code no one has: the test card.
SELF_TEST_ID = make_id_number(SELF_TEST_AREA, "19000101", "000")
#: Refusals that say who the kiosk is, not what the release does.
NOT_THE_RELEASE = ("server_refused:revoked", "server_refused:quarantined")

#: Tries before a release is judged broken, and the pause between them.
ATTEMPTS = 3
PAUSE_S = 2.0

Recorder = Callable[[str, dict[str, Any]], Awaitable[None]]
Probe = Callable[[], Awaitable[Any]]


def synthetic_credential() -> Credential:
    return Credential(
        kind="id_card", id_number=SELF_TEST_ID, completed_at=time.monotonic(), source="selftest"
    )


async def self_test_tap(
    verifier: Verifier,
    probe: Probe,
    record: Recorder,
    tap_id: str,
    *,
    attempts: int = ATTEMPTS,
    pause_s: float = PAUSE_S,
) -> str:
    """ "" when the decision path works, else why not; the result is journalled either way.

    Tried up to ``attempts`` times (each a tap of its own id): a release is rolled back for
    what it does every time, not for one slow answer."""
    for attempt in range(1, attempts + 1):
        outcome, offline, why = await _one_tap(verifier, probe, f"{tap_id}-{attempt}")
        if not why or attempt == attempts:
            break
        await asyncio.sleep(pause_s)
    detail = {"tap_id": tap_id, "outcome": outcome, "offline": offline, "ok": not why}
    detail["attempts"] = attempt
    try:
        await record("update_self_test", {**detail, **({"why": why[:300]} if why else {})})
    except Exception as exc:
        why = why or f"the journal refused the result: {type(exc).__name__}: {exc}"
    return why


async def _one_tap(verifier: Verifier, probe: Probe, tap_id: str) -> tuple[str, bool, str]:
    """(outcome, offline, why it shows a broken release or "")."""
    try:
        decision = await asyncio.wait_for(
            verifier.decide(synthetic_credential(), tap_id), verifier.deadline_s + 5.0
        )
    except Exception as exc:  # exactly what the self-test is there to catch
        return "", False, f"deciding raised {type(exc).__name__}: {exc}"
    return decision.outcome, decision.offline, await judge(decision, probe)


async def judge(decision: Decision, probe: Probe) -> str:
    """Why this decision shows a broken release ("" when it does not)."""
    if not is_decision(decision.outcome):
        return f"the outcome {decision.outcome!r} is not a decision"
    refused = [r for r in decision.reasons if r.startswith("server_refused:")]
    if refused and refused[0] not in NOT_THE_RELEASE:
        return f"the server refused the lookup: {decision.error or refused[0]}"
    if decision.offline and not any(r == "circuit_open" for r in decision.reasons):
        try:
            await probe()
        except ServerError:
            return ""  # the server is away: the offline decision is the right one
        return f"the lookup failed although the server answers: {decision.error}"[:300]
    return ""
