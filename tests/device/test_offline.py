"""Offline decisions: the cache, the breaker, clock trust and the policy on cached facts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from device.deciding.cache import KioskCache, facts_from_checks
from device.deciding.clock import ClockTrust
from device.deciding.fallback import decide_offline
from device.errors import FactsError
from device.link.breaker import CircuitBreaker

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def checks(
    colour: str = "green",
    nat_hours_ago: float = 10,
    result: str = "negative",
    flagged: bool = False,
    doses: int = 3,
    window: float = 48,
    min_doses: int = 0,
) -> dict[str, Any]:
    sampled = (NOW - dt.timedelta(hours=nat_hours_ago)).isoformat()
    return {
        "health_code": {"status": "ok", "colour": colour, "reason": "", "updated_at": sampled},
        "nat": {"status": "ok", "result": result, "sampled_at": sampled, "window_hours": window},
        "vaccination": {"status": "ok", "doses": doses, "min_doses": min_doses},
        "travel": {"status": "ok", "flagged": flagged, "area": "", "updated_at": sampled},
    }


def facts(**kw: Any) -> dict[str, Any]:
    f = facts_from_checks(checks(**kw))
    assert f is not None
    return f


def test_only_policy_fields_are_kept() -> None:
    f = facts()
    assert set(f) == {"health_code", "nat", "vaccination", "travel", "policy"}
    assert "reason" not in f["health_code"] and "lab" not in f["nat"]
    assert f["policy"] == {"nat_window_hours": 48, "min_doses": 0}
    failed = checks()
    failed["nat"] = {"status": "error", "error": "timeout"}
    assert facts_from_checks(failed) is None  # a failed source is not a fact


@pytest.mark.parametrize(
    "kw,later_h,outcome",
    [
        ({}, 0, "pass"),
        ({}, 40, "nat_expired"),  # 10 h old at caching, 50 h old at the tap: window passed
        ({"colour": "yellow"}, 0, "check"),
        ({"flagged": True}, 0, "check"),
        ({"result": "positive"}, 0, "check"),
        ({"min_doses": 2, "doses": 1}, 0, "check"),
    ],
)
def test_policy_is_recomputed_at_tap_time(kw: dict[str, Any], later_h: float, outcome: str) -> None:
    got, _ = decide_offline(facts(**kw), NOW + dt.timedelta(hours=later_h), clock_trusted=True)
    assert got == outcome


def test_untrusted_clock_never_passes() -> None:
    outcome, reasons = decide_offline(facts(), NOW, clock_trusted=False)
    assert outcome == "check" and "clock_untrusted" in reasons
    assert decide_offline(facts(colour="red"), NOW, clock_trusted=False)[0] == "check"


def test_corrupt_facts_raise_facts_error() -> None:
    with pytest.raises(FactsError):
        decide_offline({"health_code": {}}, NOW, clock_trusted=True)
    broken = facts()
    broken["nat"]["sampled_at"] = "yesterday"
    with pytest.raises(FactsError):
        decide_offline(broken, NOW, clock_trusted=True)


async def test_cache_hard_maximum_age_and_snapshot_replacement(tmp_path: Path) -> None:
    cache = KioskCache(tmp_path / "cache.db", max_age_s=3600)
    t0 = NOW.timestamp()
    try:
        await cache.put("p1", facts(), t0)
        hit = await cache.get("p1", t0 + 60)
        assert hit is not None and hit.age_s(t0 + 60) == 60 and hit.origin == "verify"
        assert await cache.get("p1", t0 + 3601) is None  # past the hard maximum
        assert await cache.get("nobody", t0) is None
        # an older answer never overwrites a newer one
        await cache.put("p1", facts(colour="red"), t0 - 10)
        hit = await cache.get("p1", t0)
        assert hit is not None and hit.facts["health_code"]["colour"] == "green"
        # a snapshot replaces the previous snapshot, not fresher verify entries
        await cache.replace_snapshot({"s1": facts(), "p1": facts(colour="red")}, t0 - 100, "k")
        await cache.replace_snapshot({"s2": facts()}, t0, "k")
        assert await cache.get("s1", t0) is None and await cache.get("s2", t0) is not None
        hit = await cache.get("p1", t0)
        assert hit is not None and hit.facts["health_code"]["colour"] == "green"
        assert await cache.prune(t0 + 7200) == 2
    finally:
        await cache.close()


def test_breaker_opens_probes_and_closes() -> None:
    now = [0.0]
    b = CircuitBreaker(threshold=3, cooldown_s=1.0, max_cooldown_s=4.0, monotonic=lambda: now[0])
    for _ in range(2):
        b.failure()
    assert b.allow()
    b.failure()
    assert not b.allow() and b.state == "open" and not b.probe_due()
    now[0] = 1.0
    assert b.probe_due()
    b.failure()  # failed probe: wait longer
    assert b.cooldown_s == 2.0 and not b.probe_due()
    now[0] = 3.0
    assert b.probe_due()
    b.success()
    assert b.allow() and b.state == "closed" and b.cooldown_s == 1.0 and b.opened == 1


def test_clock_trust_from_server_time() -> None:
    wall = [NOW.timestamp()]
    mono = [100.0]
    c = ClockTrust(
        tolerance_s=60,
        valid_for_s=3600,
        ntp_synced=lambda: False,
        wall=lambda: wall[0],
        monotonic=lambda: mono[0],
    )
    assert not c.trusted()
    c.observe_server_time((NOW + dt.timedelta(seconds=30)).isoformat())
    assert c.trusted() and c.last_skew_s == pytest.approx(-30)
    mono[0] += 3601
    assert not c.trusted()  # the agreement is too old
    c.observe_server_time((NOW - dt.timedelta(hours=2)).isoformat())
    assert not c.trusted()
    c.observe_server_time("garbage")
    assert not c.trusted()
    assert ClockTrust(ntp_synced=lambda: True).trusted()


def test_cached_answers_keep_the_sites_colour_table() -> None:
    """A site that passes blue codes says so in its answers; offline the kiosk must judge a
    blue code from that table, not from the default one (where blue checks)."""
    blue = checks(colour="blue")
    assert decide_offline(facts_from_checks(blue) or {}, NOW, clock_trusted=True)[0] == "check"
    blue["health_code"]["colours"] = {
        "green": {"passes": True, "reason": ""},
        "blue": {"passes": True, "reason": ""},
        "red": {"passes": False, "reason": "code_not_green"},
    }
    cached = facts_from_checks(blue)
    assert cached is not None
    assert decide_offline(cached, NOW, clock_trusted=True) == ("pass", ())
