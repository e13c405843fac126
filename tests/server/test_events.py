"""The live event bus: one interface, in process (SQLite) or across processes through
PostgreSQL LISTEN/NOTIFY, masked data only, slow readers dropped rather than waited for."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from core.idnumbers import SELF_TEST_AREA, is_self_test, make_id_number
from server.app import create_app
from server.config import ServerConfig
from server.events import EVENTS, presence
from server.events.bus import QUEUE_SIZE, Event, EventBus, LocalEventBus, decode, encode
from server.events.postgres import MAX_PAYLOAD, PgEventBus, batches
from server.storage.db import connect
from tests.pgserver import PgCluster

from .test_admin import PASSWORD, admin_db  # noqa: F401 - admin_db is a fixture

CLEAR_ID = "11010519491231002X"


async def next_event(sub: Any, timeout_s: float = 10.0) -> Event:
    return await asyncio.wait_for(anext(sub), timeout_s)


async def test_a_subscriber_gets_what_is_published_after_it_subscribed() -> None:
    bus = LocalEventBus()
    bus.publish("tap", {"n": 0})  # before anyone listens: nobody gets it
    sub = bus.subscribe()
    bus.publish("tap", {"n": 1})
    bus.publish("kiosk_up", {"device_id": "k-1"})
    assert [(await next_event(sub)).data for _ in range(2)] == [{"n": 1}, {"device_id": "k-1"}]
    bus.end_subscriptions()
    with pytest.raises(StopAsyncIteration):
        await next_event(sub)
    assert bus.subscribers == 0


async def test_an_event_holding_a_clear_id_number_is_not_published() -> None:
    bus = LocalEventBus()
    sub = bus.subscribe()
    bus.publish("tap", {"masked_id": CLEAR_ID})
    bus.publish("tap", {"nested": [{"x": f"card {CLEAR_ID}"}]})
    bus.publish("tap", {"masked_id": "1101**********002X"})
    assert (await next_event(sub)).data == {"masked_id": "1101**********002X"}
    assert bus.refused == 2 and bus.published == 1
    with pytest.raises(ValueError, match="unknown event kind"):
        bus.publish("nonsense", {})


async def test_a_slow_subscriber_loses_its_oldest_events_and_is_told() -> None:
    bus = LocalEventBus()
    sub = bus.subscribe()
    for n in range(QUEUE_SIZE + 5):
        bus.publish("tap", {"n": n})  # never waits for the reader
    dropped = await next_event(sub)
    assert (dropped.kind, dropped.data) == ("dropped", {"events": 5})
    assert (await next_event(sub)).data == {"n": 5}  # the oldest kept, in order
    assert (await next_event(sub)).data == {"n": 6}


def test_payloads_stay_under_the_notify_limit_and_decode_back() -> None:
    events = [Event("tap", 1.0, {"site": "s" * 500, "n": n}) for n in range(100)]
    payloads = batches(events)
    assert len(payloads) > 1 and all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    assert [e for p in payloads for e in decode(p)] == events
    too_big = Event("tap", 1.0, {"x": "y" * MAX_PAYLOAD})
    assert batches([too_big, events[0]]) == [encode([events[0]])]
    assert decode("not json") == [] and decode('[{"kind": 1}]') == []


async def buses(url: str, count: int) -> list[PgEventBus]:
    started = [PgEventBus(url) for _ in range(count)]
    for bus in started:
        await bus.start()
        await bus.listening()
    return started


async def test_postgresql_carries_events_between_buses(pg_cluster: PgCluster) -> None:
    """Two buses are two server processes: each subscriber sees every process's events,
    its own included, and a batch bigger than one NOTIFY arrives whole."""
    a, b = await buses(pg_cluster.new_database(), 2)
    try:
        at_a, at_b = a.subscribe(), b.subscribe()
        a.publish("kiosk_up", {"device_id": "k-1"})
        assert (await next_event(at_b)).data == {"device_id": "k-1"}
        assert (await next_event(at_a)).data == {"device_id": "k-1"}
        for n in range(300):
            b.publish("tap", {"n": n, "site": "x" * 100})
        got = [(await next_event(at_a)).data["n"] for _ in range(300)]
        assert got == list(range(300))
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_the_listener_comes_back_after_a_postgresql_restart(pg_cluster: PgCluster) -> None:
    a, b = await buses(pg_cluster.new_database(), 2)
    try:
        at_b = b.subscribe()
        pg_cluster.restart()
        await asyncio.gather(a.listening(30), b.listening(30))
        assert b.reconnects >= 1
        for _ in range(50):  # the sender reconnects on its first batch after the restart
            a.publish("alert", {"device_id": "k-2"})
            try:
                event = await next_event(at_b, 1.0)
                break
            except TimeoutError:
                continue
        assert event.data == {"device_id": "k-2"}
    finally:
        await asyncio.gather(a.close(), b.close())


@pytest.fixture
async def streaming(aiohttp_client: Any, config: ServerConfig, admin_db: Path) -> TestClient:  # noqa: F811
    return await aiohttp_client(create_app(config))  # type: ignore[no-any-return]


async def test_the_admin_stream_carries_heartbeats_as_kiosk_up(
    streaming: TestClient, config: ServerConfig, auth: dict[str, str], device: Any
) -> None:
    app: web.Application = streaming.app
    assert isinstance(app[EVENTS], EventBus)
    resp = await streaming.post("/v1/admin/login", json={"username": "ops", "password": PASSWORD})
    admin = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    assert (await streaming.get("/v1/admin/events")).status == 401
    async with streaming.get("/v1/admin/events", headers=admin) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert (await stream.content.readline()).startswith(b": stream open")
        if isinstance(app[EVENTS], PgEventBus):
            await app[EVENTS].listening()
        beat = await streaming.post("/v1/heartbeat", json={"boot_id": "b"}, headers=auth)
        assert beat.status == 200
        async with asyncio.timeout(10):
            while not (line := await stream.content.readline()).startswith(b"data: "):
                pass
        full = {"boot_id": "b", "journal": {"full": True, "lost": 2}}
        beat = await streaming.post("/v1/heartbeat", json=full, headers=auth)
        assert beat.status == 200
        kinds = []
        async with asyncio.timeout(10):
            while len(kinds) < 2:
                if (raw := await stream.content.readline()).startswith(b"data: "):
                    event = json.loads(raw[6:])
                    if event["kind"] != "kiosk_health":  # its own test below
                        kinds.append(event)
    assert [k["kind"] for k in kinds] == ["kiosk_up", "alert"]
    assert kinds[1]["data"] == {
        "device_id": device.device_id,
        "site": "site-a",
        "journal_full": True,
        "lost": 2,
        "dead_letters": 0,
    }
    event = json.loads(line[6:])
    assert event["kind"] == "kiosk_up"
    assert event["data"] == {
        "device_id": device.device_id,
        "site": "site-a",
        "gate": "gate-1",
        "back": False,
    }


def test_a_quiet_kiosk_is_announced_down_once_and_back_by_its_heartbeat(
    db_path: Path, device: Any
) -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    seen = now - timedelta(seconds=presence.DOWN_AFTER_S - 1)
    with connect(db_path) as conn:
        conn.execute(
            "UPDATE devices SET last_seen_at = ? WHERE device_id = ?",
            (seen.isoformat(timespec="seconds"), device.device_id),
        )
        assert presence.newly_down(conn, now) == []  # not quiet long enough
        later = now + timedelta(seconds=2)
        first = presence.newly_down(conn, later)  # one process claims the announcement
        second = presence.newly_down(conn, later)  # the other finds it claimed
        assert first == [(device.device_id, "site-a", "gate-1")] and second == []
        assert presence.back_up(conn, device.device_id)
        assert not presence.back_up(conn, device.device_id)


async def test_a_verify_is_a_tap_event_with_the_masked_number_only(
    client: TestClient, auth: dict[str, str], people: Any, device: Any
) -> None:
    app: web.Application = client.app
    sub = app[EVENTS].subscribe()
    if isinstance(app[EVENTS], PgEventBus):
        await app[EVENTS].listening()
    body = {"tap_id": "t-events-1", "credential": {"kind": "id_card", "id_number": people.passing}}
    resp = await client.post("/v1/verify", json=body, headers=auth)
    assert resp.status == 200
    event = await next_event(sub)
    assert (event.kind, event.data["device_id"], event.data["outcome"]) == (
        "tap",
        device.device_id,
        "pass",
    )
    assert event.data["masked_id"] == (await resp.json())["masked_id"]
    assert people.passing not in json.dumps(event.data)
    app[EVENTS].end_subscriptions()


async def test_a_release_self_test_tap_is_answered_but_not_shown_to_guards(
    client: TestClient, auth: dict[str, str], people: Any
) -> None:
    app: web.Application = client.app
    sub = app[EVENTS].subscribe()
    if isinstance(app[EVENTS], PgEventBus):
        await app[EVENTS].listening()
    probe = make_id_number(SELF_TEST_AREA, "19000101", "000")
    for tap_id, number in (("t-self-1", probe), ("t-events-2", people.passing)):
        body = {"tap_id": tap_id, "credential": {"kind": "id_card", "id_number": number}}
        assert (await client.post("/v1/verify", json=body, headers=auth)).status == 200
    event = await next_event(sub)  # the citizen's tap is the first and only one shown
    assert event.kind == "tap" and not is_self_test(event.data["masked_id"])
    app[EVENTS].end_subscriptions()


async def test_health_news_is_published_on_change_only(
    client: TestClient, auth: dict[str, str], device: Any
) -> None:
    app: web.Application = client.app
    sub = app[EVENTS].subscribe()
    if isinstance(app[EVENTS], PgEventBus):
        await app[EVENTS].listening()
    beat = {"boot_id": "b-health-1", "version": "1.0", "reader": {"connected": True}}
    unplugged = {**beat, "reader": {"connected": False}}
    for body in (beat, beat, unplugged):
        assert (await client.post("/v1/heartbeat", json=body, headers=auth)).status == 200
    news = []
    while len(news) < 2:
        event = await next_event(sub)
        if event.kind == "kiosk_health":
            news.append(event.data)
    assert news[0]["health"]["reader"] == "ok" and news[1]["health"]["reader"] == "fault"
    assert news[1]["site"] == device.site and news[1]["device_id"] == device.device_id
    # Events keep their order: had the second, unchanged heartbeat been news, it would be
    # news[1] (reader ok), not the unplug.
    app[EVENTS].end_subscriptions()
