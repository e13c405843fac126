"""Alerts raised and cleared from the facts the server gets: heartbeats, presence, audit
uploads and time, on SQLite and PostgreSQL, one open alert across several processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from provisioning.registry import add_device
from server.alerts import hooks, store
from server.alerts.settings import AlertSettings, SiteAlerts
from server.alerts.store import Alert
from server.appkeys import CLOCK, DATABASE
from server.config import ServerConfig
from server.events import presence
from server.fleet.devices import record_heartbeat
from server.storage.db import connect, transaction
from siheyi.cli import local_fleet

from .support import KIOSK, OTHER, Clock, Published, alert_app, alerts_of, beat, published

__all__ = ["published"]  # a fixture

STALLED_CAMERA = {"source": "/dev/video0", "live": True, "connected": False, "frames": 5}
#: kind → (the heartbeat fields that raise it, those that clear it)
HEARTBEAT_RULES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "reader_fault": (
        {"reader": {"url": "http://127.0.0.1:1/reader", "connected": False}},
        {"reader": {"url": "http://127.0.0.1:1/reader", "connected": True}},
    ),
    "camera_fault": ({"sources": [STALLED_CAMERA]}, {"sources": []}),
    "audio_fault": ({"audio": {"ok": False, "last_error": "no device"}}, {"audio": {"ok": True}}),
    "clock_untrusted": ({"clock_trusted": False}, {"clock_trusted": True}),
    "journal_backlog": ({"journal_pending": 5000}, {"journal_pending": 0}),
}


async def started(aiohttp_client: Any, app: web.Application) -> web.Application:
    await aiohttp_client(app)
    return app


async def open_alerts(app: web.Application) -> list[Alert]:
    return await app[DATABASE].run(store.open_alerts)


async def test_each_heartbeat_rule_raises_once_and_clears(
    aiohttp_client: Any, config: ServerConfig, published: Published
) -> None:
    clock = Clock()
    app = await started(aiohttp_client, alert_app(config, clock))
    for kind, (bad, good) in HEARTBEAT_RULES.items():
        await beat(app, **bad)
        await beat(app, **bad)  # the same fault again: nothing new
        [alert] = await open_alerts(app)
        assert (alert.kind, alert.device_id, alert.site, alert.gate) == (
            kind, KIOSK.device_id, "site-a", "gate-1",
        )  # fmt: skip
        assert published.kinds(kind) == ["alert_raised"]
        await beat(app, **good)
        assert await open_alerts(app) == []
        assert published.kinds(kind) == ["alert_raised", "alert_cleared"]
    _, _, event = published.events[0]
    assert set(event) == {"id", "kind", "site", "device_id", "gate", "detail"}


async def test_a_stale_cache_raises_and_a_fresh_snapshot_clears(
    aiohttp_client: Any, config: ServerConfig, published: Published
) -> None:
    clock = Clock()
    app = await started(aiohttp_client, alert_app(config, clock))
    now = clock().timestamp()
    await beat(app, cache={"snapshot_at": now - 8000, "max_age_s": 7200})
    [alert] = await open_alerts(app)
    assert alert.kind == "cache_stale" and alert.detail == {"age_s": 8000, "max_age_s": 7200}
    await beat(app, cache={"snapshot_at": now - 10, "max_age_s": 7200})
    assert await open_alerts(app) == []


async def test_a_healthy_heartbeat_with_nothing_open_touches_no_database(
    aiohttp_client: Any, config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await started(aiohttp_client, alert_app(config, Clock()))
    await hooks.tick(alerts_of(app))  # what is open is known (nothing)

    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a heartbeat that changes nothing used the database")

    db = app[DATABASE]
    monkeypatch.setattr(db, "write", refuse)
    monkeypatch.setattr(db, "run", refuse)
    fresh = {"snapshot_at": app[CLOCK]().timestamp(), "max_age_s": 7200}
    for _ in range(3):
        await beat(app, audio={"ok": True}, cache=fresh)


async def test_offline_is_raised_by_presence_and_cleared_by_presence_or_a_heartbeat(
    aiohttp_client: Any, config: ServerConfig, published: Published
) -> None:
    app = await started(aiohttp_client, alert_app(config, Clock()))
    await hooks.observe_presence(app, KIOSK.device_id, KIOSK.site, KIOSK.gate, False)
    await hooks.observe_presence(app, KIOSK.device_id, KIOSK.site, KIOSK.gate, False)
    [alert] = await open_alerts(app)
    assert alert.kind == "kiosk_offline"
    await hooks.observe_presence(app, KIOSK.device_id, KIOSK.site, KIOSK.gate, True)
    assert await open_alerts(app) == []
    await hooks.observe_presence(app, KIOSK.device_id, KIOSK.site, KIOSK.gate, False)
    await beat(app)
    assert await open_alerts(app) == []
    assert published.kinds("kiosk_offline") == ["alert_raised", "alert_cleared"] * 2


async def test_audit_trouble_adds_up_in_one_alert_which_clears_after_a_quiet_time(
    aiohttp_client: Any, config: ServerConfig, published: Published
) -> None:
    clock = Clock()
    app = await started(aiohttp_client, alert_app(config, clock, AlertSettings(audit_quiet_s=600)))
    await hooks.observe_audit(app, KIOSK, [7], [])
    clock.advance(300)
    await hooks.observe_audit(app, KIOSK, [9, 10], [11])
    [alert] = await open_alerts(app)
    assert alert.kind == "audit_chain"
    assert (alert.detail["chain_breaks"], alert.detail["conflicts"]) == (3, 1)
    assert published.kinds("audit_chain") == ["alert_raised"]
    clock.advance(599)  # 599 s after the last trouble: still open
    await hooks.tick(alerts_of(app))
    assert len(await open_alerts(app)) == 1
    clock.advance(1)
    await hooks.tick(alerts_of(app))
    assert await open_alerts(app) == []
    assert published.kinds("audit_chain") == ["alert_raised", "alert_cleared"]


async def test_repeated_invalid_credentials_at_a_gate_raise_at_the_sites_threshold(
    aiohttp_client: Any, config: ServerConfig, published: Published
) -> None:
    clock = Clock()
    settings = AlertSettings(
        invalid_threshold=10, invalid_window_s=60, sites={"site-a": SiteAlerts(invalid_threshold=3)}
    )
    app = await started(aiohttp_client, alert_app(config, clock, settings))
    await hooks.observe_audit(app, KIOSK, [], [], 2)
    await hooks.observe_audit(app, OTHER, [], [], 3)  # site-b's threshold is 10
    assert await open_alerts(app) == []
    clock.advance(70)  # the first two fall out of the window
    await hooks.observe_audit(app, KIOSK, [], [], 1)
    assert await open_alerts(app) == []
    await hooks.observe_audit(app, KIOSK, [], [], 2)
    [alert] = await open_alerts(app)
    assert (alert.kind, alert.device_id, alert.site, alert.gate) == (
        "invalid_credentials", None, "site-a", "gate-1",
    )  # fmt: skip
    assert alert.detail == {"taps": 3, "window_s": 60.0, "threshold": 3}
    await hooks.tick(alerts_of(app))
    assert len(await open_alerts(app)) == 1  # still 3 in the window
    clock.advance(61)
    await hooks.tick(alerts_of(app))
    assert await open_alerts(app) == []
    assert published.kinds("invalid_credentials") == ["alert_raised", "alert_cleared"]


def test_recent_invalid_taps_counts_only_invalid_decisions_within_the_window(
    config: ServerConfig,
) -> None:
    clock = Clock()
    app = alert_app(config, clock, AlertSettings(invalid_window_s=300))
    now = clock()
    recent = now.isoformat()
    old = (now.replace(year=now.year - 1)).isoformat()
    events = [
        ("invalid_credential", recent),
        ("invalid_credential", old),
        ("pass", recent),
        (None, recent),
        ("invalid_credential", "not a time"),
        ("invalid_credential", recent),
    ]
    assert hooks.recent_invalid_taps(app, events) == 2


async def test_two_processes_raise_one_alert_and_either_clears_it(
    aiohttp_client: Any, config: ServerConfig, published: Published
) -> None:
    clock = Clock()
    one = await started(aiohttp_client, alert_app(config, clock))
    two = await started(aiohttp_client, alert_app(config, clock))
    bad = HEARTBEAT_RULES["reader_fault"][0]
    await asyncio.gather(*(beat(app, **bad) for app in (one, two, one, two)))
    [alert] = await open_alerts(one)
    assert published.kinds("reader_fault") == ["alert_raised"]
    # process two never raised it; once it has re-read what is open, its heartbeat clears it
    await hooks.tick(alerts_of(two))
    await beat(two, **HEARTBEAT_RULES["reader_fault"][1])
    assert await open_alerts(one) == []
    # process one still believes it open: its clear finds nothing to do and publishes nothing
    await beat(one, **HEARTBEAT_RULES["reader_fault"][1])
    assert published.kinds("reader_fault") == ["alert_raised", "alert_cleared"]
    assert [app for app, kind, _ in published.events if kind == "alert_cleared"] == [two]
    # the same fault again is a new alert
    await beat(one, **bad)
    [again] = await open_alerts(two)
    assert again.id != alert.id


async def test_invalid_taps_counted_by_two_processes_add_up_to_one_alert(
    aiohttp_client: Any, config: ServerConfig, published: Published
) -> None:
    clock = Clock()
    settings = AlertSettings(invalid_threshold=4)
    one = await started(aiohttp_client, alert_app(config, clock, settings))
    two = await started(aiohttp_client, alert_app(config, clock, settings))
    await asyncio.gather(*(hooks.observe_audit(a, KIOSK, [], [], 2) for a in (one, two, one)))
    [alert] = await open_alerts(one)
    assert alert.kind == "invalid_credentials"
    assert published.kinds("invalid_credentials") == ["alert_raised"]


async def test_the_alerts_of_a_revoked_or_removed_kiosk_are_cleared(
    aiohttp_client: Any, config: ServerConfig, db_path: Path | str, published: Published
) -> None:
    kept = add_device(local_fleet(None, db_path), "SN-K", "site-a", "gate-1")
    gone = add_device(local_fleet(None, db_path), "SN-G", "site-a", "gate-2")
    app = await started(aiohttp_client, alert_app(config, Clock()))
    for bundle in (kept, gone):
        await hooks.observe_presence(app, bundle.device_id, "site-a", "gate-1", False)
    await hooks.observe_presence(app, "never-enrolled", "site-a", "gate-3", False)
    with connect(db_path) as conn, transaction(conn):
        conn.execute("UPDATE devices SET status = 'revoked' WHERE device_id = ?", (gone.device_id,))
    await hooks.tick(alerts_of(app))  # not every tick: the orphan check runs with the purge
    assert len(await open_alerts(app)) == 3
    await hooks.tick(alerts_of(app), purge=True)
    assert [a.device_id for a in await open_alerts(app)] == [kept.device_id]


async def test_offline_alerts_follow_the_presence_table_without_any_hook(
    aiohttp_client: Any, config: ServerConfig, db_path: Path | str, published: Published
) -> None:
    """Whichever process announced the kiosk down (heartbeats stopped, socket closed), and
    whichever heard it again, the background check raises and clears from ``kiosk_down``."""
    bundle = add_device(local_fleet(None, db_path), "SN-P", "site-a", "gate-4")
    clock = Clock()
    app = await started(aiohttp_client, alert_app(config, clock))
    await app[DATABASE].run(lambda conn: presence.mark_down(conn, bundle.device_id, clock()))
    await hooks.tick(alerts_of(app))
    await hooks.tick(alerts_of(app))
    [alert] = await open_alerts(app)
    assert (alert.kind, alert.device_id) == ("kiosk_offline", bundle.device_id)
    assert alert.gate == "gate-4"
    clock.advance(30)
    seen = clock().isoformat()

    def heard(conn: Any) -> None:
        presence.back_up(conn, bundle.device_id)
        record_heartbeat(conn, bundle.device_id, "{}", seen)

    await app[DATABASE].run(heard)
    await hooks.tick(alerts_of(app))
    assert await open_alerts(app) == []
    assert published.kinds("kiosk_offline") == ["alert_raised", "alert_cleared"]


async def test_a_refresh_keeps_what_this_process_changed_while_it_read(
    aiohttp_client: Any, config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await started(aiohttp_client, alert_app(config, Clock()))
    service = alerts_of(app)
    db = app[DATABASE]
    real_run = db.run
    read, release = asyncio.Event(), asyncio.Event()

    async def slow_run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        answer = await real_run(fn, *args, **kwargs)
        if fn is store.open_alerts:  # the refresh has read; hold its answer back
            read.set()
            await release.wait()
        return answer

    monkeypatch.setattr(db, "run", slow_run)
    refresh = asyncio.create_task(service.refresh())
    await read.wait()
    await beat(app, clock_trusted=False)  # raised after the refresh read
    release.set()
    await refresh
    assert service.is_open(KIOSK.device_id, "clock_untrusted")
    await beat(app, clock_trusted=True)  # so this heartbeat clears it
    assert await open_alerts(app) == []


async def test_a_failing_database_never_fails_the_heartbeat_or_upload_it_observes(
    aiohttp_client: Any, config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await started(aiohttp_client, alert_app(config, Clock()))

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("database gone")

    monkeypatch.setattr(app[DATABASE], "write", broken)
    await beat(app, clock_trusted=False)
    await hooks.observe_audit(app, KIOSK, [3], [], 9)
    await hooks.observe_presence(app, KIOSK.device_id, KIOSK.site, KIOSK.gate, False)
    monkeypatch.undo()
    assert await open_alerts(app) == []
    await beat(app, clock_trusted=False)  # the next heartbeat raises it
    assert [a.kind for a in await open_alerts(app)] == ["clock_untrusted"]
