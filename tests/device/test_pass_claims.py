"""A signed pass is claimed at the server when it can be: the same pass is then refused at
every other kiosk; without the server each kiosk's own memory is the only guard."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from device.deciding.verifier import Verifier
from device.errors import ServerRejected
from device.link.breaker import CircuitBreaker

from .test_clock import PASS_KEY_HEX, Clocks, FakeServer, kiosk, server_time, signed_pass


def one_kiosk(server: FakeServer, clocks: Clocks, **kw: Any) -> Verifier:
    """A kiosk that trusts its clock and knows the server's pass key."""
    clock = clocks.trust()
    clock.observe_server_time(server_time(clocks))
    verifier, _ = kiosk(clocks, clock, server, server_key_hex=PASS_KEY_HEX, **kw)
    return verifier


def two_kiosks(server: FakeServer, clocks: Clocks) -> tuple[Verifier, Verifier]:
    return one_kiosk(server, clocks), one_kiosk(server, clocks)


async def test_a_pass_used_at_one_kiosk_is_refused_at_the_other() -> None:
    clocks = Clocks()
    server = FakeServer(clocks)
    first, second = two_kiosks(server, clocks)
    at_first = await first.decide(signed_pass(), "t1")
    at_second = await second.decide(signed_pass(), "t2")
    assert (at_first.outcome, at_first.reasons, at_first.offline) == (
        "pass",
        ("signed_pass", "pass_claimed"),
        False,
    )
    assert (at_second.outcome, at_second.reasons) == ("invalid_credential", ("pass_replayed",))
    assert at_second.masked_id == at_first.masked_id != ""  # the audit knows whose pass


async def test_without_the_server_each_kiosk_falls_back_on_its_own_memory() -> None:
    clocks = Clocks()
    server = FakeServer(clocks)
    server.up = False
    first, second = two_kiosks(server, clocks)
    decisions = [await v.decide(signed_pass(), f"t{n}") for n, v in enumerate((first, second))]
    for d in decisions:  # the remaining window (docs/passes.md): once at each kiosk
        assert (d.outcome, d.reasons, d.offline) == (
            "pass",
            ("signed_pass", "pass_claim_unavailable"),
            True,
        )
    again = await first.decide(signed_pass(), "t3")
    assert again.reasons == ("pass_replayed",)  # but never twice at one kiosk
    assert server.claims == set()


async def test_an_open_breaker_skips_the_claim() -> None:
    clocks = Clocks()
    server = FakeServer(clocks)
    breaker = CircuitBreaker(threshold=1)
    breaker.failure()
    verifier = one_kiosk(server, clocks, breaker=breaker)
    d = await verifier.decide(signed_pass(), "t")
    assert d.reasons == ("signed_pass", "pass_claim_offline") and d.offline
    assert server.claims == set()


class SlowServer(FakeServer):
    async def claim_pass(self, nonce: str, expires_at: int, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s + 5)


async def test_a_slow_claim_is_given_up_at_the_deadline() -> None:
    clocks = Clocks()
    server = SlowServer(clocks)
    verifier = one_kiosk(server, clocks)
    verifier.deadline_s = 0.05
    # completed at the kiosk's monotonic 0, which is now: the whole 50 ms remain
    d = await verifier.decide(replace(signed_pass(), completed_at=0.0), "t")
    assert d.reasons == ("signed_pass", "pass_claim_unavailable")
    assert verifier.breaker._failures == 1  # a claim that times out counts as an outage


class RefusingServer(FakeServer):
    def __init__(self, clocks: Clocks, status: int, error: str) -> None:
        super().__init__(clocks)
        self.refusal = ServerRejected(status, error, "")

    async def claim_pass(self, nonce: str, expires_at: int, timeout_s: float) -> None:
        raise self.refusal


async def test_a_cut_off_kiosk_asks_for_a_check_and_an_old_server_changes_nothing() -> None:
    clocks = Clocks()
    revoked = one_kiosk(RefusingServer(clocks, 403, "revoked"), clocks)
    d = await revoked.decide(signed_pass(), "t")
    assert (d.outcome, d.reasons) == ("check", ("pass_claim_refused",))
    old = one_kiosk(RefusingServer(clocks, 404, "not_found"), clocks)
    d = await old.decide(signed_pass(), "t")
    assert (d.outcome, d.reasons) == ("pass", ("signed_pass", "pass_claim_unsupported"))
