"""Per-source timeout and last-known value (ResilientSource), the stale policy, and /v1/verify."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.checks import Checks, HealthCode, NatResult, SourceResult, Travel, Vaccination
from core.policy import decide, usable
from server.app import create_app
from server.appkeys import VERIFIER
from server.config import ServerConfig, SitePolicy, SourceSettings
from server.storage.db import Database
from server.verify.resilience import ResilientSource
from server.verify.sources import SourceAdapter, local_sources

from .conftest import People

NUMBER = "11010519491231002X"
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


class FakeClock:
    """An aware clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Flaky:
    """A source whose behaviour the test switches: ok, missing, raise, sleep, or error result."""

    def __init__(self, name: str = "health_code", value: Any = None) -> None:
        self.name = name
        self.mode = "ok"
        self.value = value if value is not None else HealthCode("green", "", T0)
        self.calls = 0

    async def lookup(self, id_number: str) -> SourceResult[Any]:
        self.calls += 1
        if self.mode == "raise":
            raise RuntimeError(f"upstream refused {id_number}")
        if self.mode == "sleep":
            await asyncio.sleep(5)
        if self.mode == "missing":
            return SourceResult.missing()
        if self.mode == "error_result":
            return SourceResult.failed("http_503")
        return SourceResult.ok(self.value)


async def test_success_then_failure_gives_stale_with_age() -> None:
    clock = FakeClock()
    flaky = Flaky()
    source = ResilientSource(flaky, timeout_s=0.2, clock=clock)
    first = await source.lookup(NUMBER)
    assert first.status == "ok" and first.value == flaky.value
    clock.advance(seconds=90)
    flaky.mode = "raise"
    stale = await source.lookup(NUMBER)
    assert stale.status == "stale"
    assert stale.value == flaky.value
    assert stale.age_s == 90
    assert stale.error == "failed"
    # another person was never seen: plain error
    other = await source.lookup("110101199003074514")
    assert (other.status, other.error, other.value) == ("error", "failed", None)
    assert source.stats().failures == 2
    assert source.stats().stale_served == 1


async def test_timeout_bounds_a_slow_source_and_serves_stale() -> None:
    flaky = Flaky()
    source = ResilientSource(flaky, timeout_s=0.1)
    await source.lookup(NUMBER)
    flaky.mode = "sleep"
    started = time.monotonic()
    result = await source.lookup(NUMBER)
    assert time.monotonic() - started < 0.5
    assert (result.status, result.error) == ("stale", "timeout")
    assert result.value == flaky.value


async def test_error_result_counts_as_failure() -> None:
    flaky = Flaky()
    source = ResilientSource(flaky, timeout_s=0.2)
    await source.lookup(NUMBER)
    flaky.mode = "error_result"
    result = await source.lookup(NUMBER)
    assert (result.status, result.error) == ("stale", "http_503")


async def test_missing_forgets_the_last_value() -> None:
    flaky = Flaky()
    source = ResilientSource(flaky, timeout_s=0.2)
    await source.lookup(NUMBER)
    flaky.mode = "missing"
    assert (await source.lookup(NUMBER)).status == "missing"
    flaky.mode = "raise"
    assert (await source.lookup(NUMBER)).status == "error"  # not the old value


async def test_lru_is_bounded() -> None:
    flaky = Flaky()
    source = ResilientSource(flaky, timeout_s=0.2, max_entries=2)
    a, b, c = "A" * 18, "B" * 18, "C" * 18
    for number in (a, b):
        await source.lookup(number)
    assert source.peek(a) is not None
    await source.lookup(a)  # a is now the most recently used
    await source.lookup(c)  # evicts b
    assert source.stats().remembered == 2
    assert source.peek(b) is None
    assert source.peek(a) is not None and source.peek(c) is not None
    off = ResilientSource(flaky, timeout_s=0.2, max_entries=0)
    await off.lookup(a)
    assert off.peek(a) is None


async def test_logs_once_on_failure_and_once_on_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="server.verify.resilience")
    flaky = Flaky()
    source = ResilientSource(flaky, timeout_s=0.2)
    flaky.mode = "raise"
    for _ in range(5):
        await source.lookup(NUMBER)
    flaky.mode = "ok"
    for _ in range(3):
        await source.lookup(NUMBER)
    flaky.mode = "raise"
    await source.lookup(NUMBER)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert [r.getMessage().split(" (")[0] for r in warnings] == [
        "source health_code failing",
        "source health_code failing",
    ]
    assert len(infos) == 1 and "recovered" in infos[0].getMessage()
    assert source.failures == 6
    assert NUMBER not in caplog.text  # the exception text held it: masked
    assert "1101**********002X" in caplog.text


def _checks(health: SourceResult[Any]) -> Checks:
    return Checks(
        health,
        SourceResult.ok(NatResult("negative", T0 - timedelta(hours=2), "")),
        SourceResult.ok(Vaccination(2, None)),
        SourceResult.ok(Travel(False, "", T0)),
    )


def test_policy_uses_a_recent_stale_value_like_ok() -> None:
    green = HealthCode("green", "", T0)
    policy = SitePolicy()
    recent = _checks(SourceResult.stale(green, 60.0, "timeout"))
    assert decide(recent, T0, policy, max_stale_s=3600).outcome == "pass"
    old = _checks(SourceResult.stale(green, 3601.0, "timeout"))
    decision = decide(old, T0, policy, max_stale_s=3600)
    assert (decision.outcome, decision.reasons) == ("check", ("source_error:health_code",))
    # the default limit is 6 h
    assert decide(_checks(SourceResult.stale(green, 6 * 3600, "x")), T0, policy).outcome == "pass"
    assert decide(_checks(SourceResult.stale(green, 6 * 3600 + 1, "x")), T0, policy).outcome == (
        "check"
    )
    yellow = _checks(SourceResult.stale(HealthCode("yellow", "", T0), 5.0, "timeout"))
    assert decide(yellow, T0, policy).reasons == ("code_not_green",)


def test_usable_turns_too_old_into_the_sources_error() -> None:
    result = usable(SourceResult.stale("v", 100.0, "timeout"), 10)
    assert (result.status, result.error, result.value) == ("error", "timeout", None)
    fresh = SourceResult.stale("v", 5.0, "timeout")
    assert usable(fresh, 10) is fresh


def replacing(*fakes: Any) -> Any:
    def factory(db: Database) -> Sequence[SourceAdapter]:
        names = {f.name for f in fakes}
        return [s for s in local_sources(db) if s.name not in names] + list(fakes)

    return factory


async def _verify(client: TestClient, auth: dict[str, str], number: str) -> dict[str, Any]:
    resp = await client.post(
        "/v1/verify",
        json={
            "tap_id": f"t-{uuid.uuid4().hex}",
            "credential": {"kind": "id_card", "id_number": number},
        },
        headers=auth,
    )
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_verify_answers_stale_then_check_when_too_old(
    aiohttp_client: Any, config: ServerConfig, auth: dict[str, str], people: People
) -> None:
    clock = FakeClock(datetime.now(UTC))
    travel = Flaky("travel", Travel(False, "", clock.now))
    app = create_app(
        replace(config, source_timeout_s=0.2, source_max_stale_s=3600),
        source_factory=replacing(travel),
        clock=clock,
    )
    client: TestClient = await aiohttp_client(app)
    body = await _verify(client, auth, people.passing)
    assert body["outcome"] == "pass"
    assert body["checks"]["travel"] == {"status": "ok", "flagged": False, "area": ""}

    travel.mode = "sleep"  # slow: the answer must not wait for it
    clock.advance(seconds=600)
    started = time.monotonic()
    body = await _verify(client, auth, people.passing)
    assert time.monotonic() - started < 0.2 + 0.5
    assert body["outcome"] == "pass"
    assert body["reasons"] == []
    assert body["checks"]["travel"] == {
        "status": "ok",
        "stale": True,
        "age_s": 600.0,
        "error": "timeout",
        "flagged": False,
        "area": "",
    }
    assert "stale" not in body["checks"]["health_code"]

    clock.advance(seconds=3001)  # beyond max_stale_s
    travel.mode = "raise"
    body = await _verify(client, auth, people.passing)
    assert body["outcome"] == "check"
    assert body["reasons"] == ["source_error:travel"]
    assert body["checks"]["travel"] == {"status": "error", "error": "failed"}

    travel.mode = "ok"  # recovered: fresh again
    body = await _verify(client, auth, people.passing)
    assert body["outcome"] == "pass"
    assert "stale" not in body["checks"]["travel"]
    stats = {s.name: s.stats() for s in app[VERIFIER].sources.values()}
    assert stats["travel"].failures == 2 and not stats["travel"].failing


async def test_per_source_timeout_from_config(
    aiohttp_client: Any, config: ServerConfig, auth: dict[str, str], people: People
) -> None:
    travel = Flaky("travel")
    travel.mode = "sleep"
    app = create_app(
        replace(config, source_timeout_s=5, sources={"travel": SourceSettings(timeout_s=0.1)}),
        source_factory=replacing(travel),
    )
    client: TestClient = await aiohttp_client(app)
    started = time.monotonic()
    body = await _verify(client, auth, people.passing)
    assert time.monotonic() - started < 1.0  # 0.1 s for travel, not the 5 s default
    assert body["checks"]["travel"] == {"status": "error", "error": "timeout"}
    assert app[VERIFIER].sources["travel"].timeout_s == 0.1
    assert app[VERIFIER].sources["nat"].timeout_s == 5
