"""Kiosks' own counters: folded at each heartbeat, exported per site, only ever growing
although a kiosk's counters start again at zero when its agent restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from aiohttp.test_utils import TestClient

from core import wire
from provisioning.registry import DeviceBundle, add_device
from server.config import ServerConfig
from server.metrics.kiosks import fold, site_totals
from server.storage.db import connect, transaction
from siheyi.cli import local_fleet
from tests.server.conftest import bearer

from .support import metrics_app, parse, value

NOW = "2026-11-28T10:00:00+00:00"


def counters(
    passed: int,
    *,
    offline: int = 0,
    errors: int = 0,
    backlog: int = 0,
    latency: list[int] | None = None,
    latency_sum: float = 0.0,
) -> wire.KioskCounters:
    return wire.KioskCounters(
        taps={"pass": passed},
        offline_decisions=offline,
        reader_errors=errors,
        prompt_latency=wire.LatencyCounts(latency or [], latency_sum),
        journal_backlog=backlog,
    )


def _fold(db_path: Path | str, device_id: str, boot: str, made: wire.KioskCounters) -> None:
    with connect(db_path) as conn, transaction(conn):
        fold(conn, device_id, boot, made, NOW)


def _passed(db_path: Path | str, site: str = "site-a") -> float:
    with connect(db_path) as conn:
        return site_totals(conn)[site].counts.get("taps.pass", 0.0)


def test_same_boot_replaces_and_a_new_boot_carries(
    db_path: Path | str, device: DeviceBundle
) -> None:
    seen = []
    for boot, passed in (("b1", 5), ("b1", 7), ("b1", 7), ("b2", 2), ("b2", 3), ("b3", 0)):
        _fold(db_path, device.device_id, boot, counters(passed))
        seen.append(_passed(db_path))
    assert seen == [5, 7, 7, 9, 10, 10]


def test_a_count_that_went_down_in_one_boot_is_carried(
    db_path: Path | str, device: DeviceBundle
) -> None:
    _fold(db_path, device.device_id, "b1", counters(5))
    _fold(db_path, device.device_id, "b1", counters(1))
    assert _passed(db_path) == 6


def test_sites_sum_their_kiosks_and_revoked_kiosks_keep_their_counts(
    db_path: Path | str, device: DeviceBundle
) -> None:
    fleet = local_fleet(None, db_path)
    other = add_device(fleet, "SN-0002", "site-a", "gate-2", server_url="http://test")
    away = add_device(fleet, "SN-0003", "site-b", "gate-1", server_url="http://test")
    _fold(db_path, device.device_id, "b1", counters(5, backlog=4, errors=1))
    _fold(db_path, other.device_id, "x", counters(2, backlog=3, offline=2))
    _fold(db_path, away.device_id, "y", counters(1))
    with connect(db_path) as conn, transaction(conn):
        conn.execute(
            "UPDATE devices SET status = 'revoked' WHERE device_id = ?", (other.device_id,)
        )
    with connect(db_path) as conn:
        sites = site_totals(conn)
    assert sites["site-a"].counts == {"taps.pass": 7, "reader_errors": 1, "offline_decisions": 2}
    assert sites["site-a"].backlog == 4  # the revoked kiosk's backlog is no longer waited for
    assert sites["site-b"].counts == {"taps.pass": 1}


async def _beat(
    client: TestClient, auth: dict[str, str], boot: str, made: wire.KioskCounters
) -> None:
    body = {"boot_id": boot, "counters": msgspec.to_builtins(made)}
    resp = await client.post("/v1/heartbeat", json=body, headers=auth)
    assert resp.status == 200, await resp.text()


async def test_heartbeat_counters_per_site_only_grow_across_a_restart(
    aiohttp_client: Any, config: ServerConfig, auth: dict[str, str], db_path: Path | str
) -> None:
    client: TestClient = await aiohttp_client(metrics_app(config))
    other = add_device(
        local_fleet(None, db_path), "SN-0002", "site-a", "gate-2", server_url="http://test"
    )
    other_auth = bearer(db_path, other)  # type: ignore[arg-type]
    seen = []
    steps = [
        (auth, "b1", counters(5, latency=[3, 2], latency_sum=0.5, backlog=2)),
        (other_auth, "o1", counters(1, latency=[0, 0, 0, 0, 0, 0, 1], latency_sum=4.0)),
        (auth, "b1", counters(7, latency=[4, 3], latency_sum=0.7, backlog=1, errors=2)),
        (auth, "b2", counters(2, latency=[1], latency_sum=0.05)),  # restarted: from zero
    ]
    for who, boot, made in steps:
        await _beat(client, who, boot, made)
        resp = await client.get("/metrics")
        seen.append(parse(await resp.text()))
    passed = [value(s, "siheyi_kiosk_taps_total", site="site-a", outcome="pass") for s in seen]
    assert passed == [5, 6, 8, 10]
    last = seen[-1]
    assert value(last, "siheyi_kiosk_taps_total", site="site-a", outcome="check") == 0
    assert value(last, "siheyi_kiosk_reader_errors_total", site="site-a") == 2
    assert value(last, "siheyi_kiosk_journal_backlog", site="site-a") == 0
    assert value(seen[0], "siheyi_kiosk_journal_backlog", site="site-a") == 2
    name = "siheyi_kiosk_prompt_latency_seconds"
    assert value(last, f"{name}_bucket", site="site-a", le="0.1") == 5  # 4 of b1, 1 of b2
    assert value(last, f"{name}_bucket", site="site-a", le="0.25") == 8
    assert value(last, f"{name}_bucket", site="site-a", le="3.0") == 8
    assert value(last, f"{name}_bucket", site="site-a", le="+Inf") == 9
    assert value(last, f"{name}_count", site="site-a") == 9
    assert abs(value(last, f"{name}_sum", site="site-a") - 4.75) < 1e-9
