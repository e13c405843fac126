"""The board's API and pages over real storage (SQLite and PostgreSQL): what a guard, an
admin and an auditor see; another site's kiosk is a 403 on every route."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.board import pages
from server.board.models import KioskDetail, KioskList, check
from server.events import EVENTS, publish
from server.storage.db import connect, transaction
from tests.board.conftest import Scene
from tests.board.support import decisions, status
from tests.server.users_support import PASSWORD, bearer, token_for

Client = TestClient[web.Request, web.Application]


async def beat(client: Client, scene: Scene, device: Any, **changes: Any) -> None:
    resp = await client.post(
        "/v1/heartbeat", json=status(**changes), headers=scene.device_auth(device)
    )
    assert resp.status == 200, await resp.text()


async def upload(client: Client, scene: Scene, device: Any, taps: list[Any]) -> None:
    events = decisions(taps, datetime.now(UTC))
    resp = await client.post(
        "/v1/audit", json={"events": events}, headers=scene.device_auth(device)
    )
    assert resp.status == 200, await resp.text()


async def as_user(client: Client, username: str) -> dict[str, str]:
    return bearer(await token_for(client, username))


async def kiosks_of(client: Client, username: str) -> dict[str, dict[str, Any]]:
    resp = await client.get("/v1/guard/kiosks", headers=await as_user(client, username))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    check(body, KioskList)
    return {k["serial"]: k for k in body["kiosks"]}


async def test_a_guard_sees_the_kiosks_of_the_assigned_sites_only(
    client: Client, scene: Scene
) -> None:
    assert set(await kiosks_of(client, "guard-a")) == {"SN-A1", "SN-A2"}
    assert set(await kiosks_of(client, "guard-b")) == {"SN-B1"}
    assert set(await kiosks_of(client, "boss")) == {"SN-A1", "SN-A2", "SN-B1"}
    assert set(await kiosks_of(client, "reader")) == {"SN-A1", "SN-A2", "SN-B1"}


async def test_health_comes_from_the_last_heartbeat(client: Client, scene: Scene) -> None:
    await beat(
        client,
        scene,
        scene.a1,
        reader={"connected": False},
        clock_trusted=False,
        circuit={"state": "open"},
        journal_pending=41,
        version="1.4.2",
        audio={"ok": True},
        sources=[],
    )
    found = await kiosks_of(client, "guard-a")
    a1, a2 = found["SN-A1"], found["SN-A2"]
    assert a1["online"] is True and a1["last_seen"] is not None
    assert a1["health"] | {"uptime_s": None} == {
        "reader": "fault",
        "camera": "absent",
        "audio": "ok",
        "clock_trusted": False,
        "clock_skew_s": None,
        "circuit": "open",
        "journal_backlog": 41,
        "journal_full": False,
        "journal_lost": 0,
        "version": "1.4.2",
        "uptime_s": None,
        "last_tap": None,
    }
    assert a2["online"] is False and a2["last_seen"] is None
    await beat(client, scene, scene.a2)
    a2 = (await kiosks_of(client, "guard-a"))["SN-A2"]
    assert a2["online"] is True
    assert (a2["health"]["reader"], a2["health"]["camera"]) == ("ok", "ok")


async def test_a_kiosk_announced_down_is_offline(client: Client, scene: Scene) -> None:
    await beat(client, scene, scene.a1)
    assert (await kiosks_of(client, "guard-a"))["SN-A1"]["online"] is True
    with connect(scene.db) as conn, transaction(conn):
        conn.execute(
            "INSERT INTO kiosk_down (device_id, since) VALUES (?, ?)",
            (scene.a1.device_id, datetime.now(UTC).isoformat()),
        )
    assert (await kiosks_of(client, "guard-a"))["SN-A1"]["online"] is False


async def test_a_kiosk_with_todays_counts_and_recent_taps(client: Client, scene: Scene) -> None:
    taps = [
        ("pass", [], False),
        ("check", ["code_yellow"], False),
        ("pass", [], True),
        ("invalid_credential", ["card_unreadable"], False),
    ]
    await upload(client, scene, scene.a1, taps)
    await upload(client, scene, scene.b1, [("pass", [], False)])
    resp = await client.get(
        f"/v1/guard/kiosks/{scene.a1.device_id}", headers=await as_user(client, "guard-a")
    )
    assert resp.status == 200
    body = await resp.json()
    check(body, KioskDetail)
    assert body["today"] == {"pass": 2, "check": 1, "invalid_credential": 1}
    recent = body["recent"]
    assert [t["outcome"] for t in recent] == ["invalid_credential", "pass", "check", "pass"]
    assert recent[0]["reasons"] == ["card_unreadable"] and recent[0]["offline"] is False
    assert recent[1]["offline"] is True
    assert all("**********" in t["masked_id"] for t in recent)
    assert body["health"]["last_tap"] == recent[0]
    listed = await kiosks_of(client, "guard-a")
    assert listed["SN-A1"]["health"]["last_tap"] == recent[0]
    assert listed["SN-A2"]["health"]["last_tap"] is None


@pytest.mark.parametrize(
    "path",
    ["/v1/guard/kiosks/{id}", "/board/kiosks/{id}", "/board/kiosks/{id}/card"],
)
async def test_another_sites_kiosk_is_refused_on_every_route(
    client: Client, scene: Scene, path: str
) -> None:
    """By bearer token for the API, by the session cookie for the pages."""
    await log_in(client, "guard-a")
    headers = await as_user(client, "guard-a") if path.startswith("/v1/") else {}
    mine = await client.get(path.format(id=scene.a1.device_id), headers=headers)
    theirs = await client.get(path.format(id=scene.b1.device_id), headers=headers)
    unknown = await client.get(path.format(id="k-nosuchkiosk"), headers=headers)
    assert (mine.status, theirs.status, unknown.status) == (200, 403, 404)
    assert "SN-B1" not in await theirs.text()


async def log_in(client: Client, username: str, password: str = PASSWORD) -> int:
    resp = await client.post(
        "/board/login",
        data={"username": username, "password": password},
        allow_redirects=False,
    )
    return resp.status


async def test_pages_need_a_session_and_logout_ends_it(client: Client, scene: Scene) -> None:
    for path in ("/board/", "/board/alerts", "/board/lookup", "/board/audit"):
        resp = await client.get(path, allow_redirects=False)
        assert (resp.status, resp.headers["Location"]) == (303, "/board/login")
    assert await log_in(client, "guard-a", "wrong password") == 401
    assert await log_in(client, "guard-a") == 303
    page = await client.get("/board/")
    text = await page.text()
    assert page.status == 200 and "SN-A1" in text and "SN-B1" not in text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    csrf = text.split('name="csrf-token" content="')[1].split('"')[0]
    forged = await client.post("/board/logout", data={"csrf_token": "0" * 40})
    assert forged.status == 403
    resp = await client.post("/board/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/board/login")
    again = await client.get("/board/", allow_redirects=False)
    assert again.status == 303


async def test_language_zh_by_default_english_on_request_and_remembered(
    client: Client, scene: Scene
) -> None:
    await log_in(client, "guard-a")
    assert '<html lang="zh-CN">' in await (await client.get("/board/")).text()
    english = await client.get("/board/?lang=en")
    assert '<html lang="en">' in await english.text() and "Recent taps" in await english.text()
    assert '<html lang="en">' in await (await client.get("/board/alerts")).text()
    one_site = await (await client.get("/board/?site=site-a")).text()
    assert 'href="/board/?site=site-a&amp;lang=zh-CN"' in one_site  # switching keeps the site


async def read_events(client: Client, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    """The first ``count`` events of the caller's stream."""
    resp = await client.get("/v1/guard/events", headers=headers)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(got) < count:
            line = (await resp.content.readline()).decode()
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
    resp.close()
    return got


async def test_the_event_stream_holds_the_callers_sites_only(client: Client, scene: Scene) -> None:
    guard, admin = await as_user(client, "guard-a"), await as_user(client, "boss")
    app = client.app
    assert app is not None
    before = app[EVENTS].subscribers  # the server's own listeners (command relay, ...)
    readers = [
        asyncio.create_task(read_events(client, guard, 2)),
        asyncio.create_task(read_events(client, admin, 3)),
    ]
    while not _subscribers(app, before + 2):
        await asyncio.sleep(0.01)
    publish(app, "tap", device_id=scene.b1.device_id, site="site-b", outcome="pass")
    publish(app, "kiosk_down", device_id=scene.a1.device_id, site="site-a", gate="gate-1")
    publish(app, "kiosk_health", device_id="?")  # no site: guards never see it
    publish(app, "command", device_id=scene.a1.device_id, site="site-a", signed={})  # plumbing
    publish(app, "tap", device_id=scene.a2.device_id, site="site-a", outcome="check")
    seen_by_guard, seen_by_admin = await asyncio.gather(*readers)
    assert [(e["kind"], e["data"]["site"]) for e in seen_by_guard] == [
        ("kiosk_down", "site-a"),
        ("tap", "site-a"),
    ]
    assert [e["kind"] for e in seen_by_admin] == ["tap", "kiosk_down", "kiosk_health"]


def _subscribers(app: web.Application, n: int) -> bool:
    bus = app.get(EVENTS)
    return bus is not None and bus.subscribers >= n


async def test_repeated_wrong_passwords_are_throttled_in_words(
    client: Client, scene: Scene
) -> None:
    """The board's form shares the login throttle of POST /v1/login."""
    statuses = [await log_in(client, "guard-a", "wrong password") for _ in range(5)]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    page = await client.post("/board/login", data={"username": "guard-a", "password": "x"})
    assert page.status == 429 and "尝试次数过多" in await page.text()


async def test_a_login_form_posted_from_another_site_is_refused(
    client: Client, scene: Scene
) -> None:
    """Login CSRF: another site's page must not sign this browser in to its account."""
    form = {"username": "guard-a", "password": PASSWORD}
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        page = await client.post("/board/login", data=form, headers=headers)
        assert page.status == 403 and "Set-Cookie" not in page.headers
    same = {"Sec-Fetch-Site": "same-origin"}
    page = await client.post("/board/login", data=form, headers=same, allow_redirects=False)
    assert page.status == 303 and "siheyi_session" in page.headers["Set-Cookie"]


async def test_one_site_by_query_and_never_another_guards(client: Client, scene: Scene) -> None:
    boss, guard = await as_user(client, "boss"), await as_user(client, "guard-a")
    resp = await client.get("/v1/guard/kiosks?site=site-b", headers=boss)
    assert [k["serial"] for k in (await resp.json())["kiosks"]] == ["SN-B1"]
    for path in ("/v1/guard/kiosks?site=site-b", "/v1/guard/events?site=site-b"):
        assert (await client.get(path, headers=guard)).status == 403
    await log_in(client, "guard-a")
    page = await client.get("/board/?site=site-b")
    assert page.status == 403 and "SN-B1" not in await page.text()
    mine = await client.get("/board/?site=site-a")
    assert mine.status == 200 and 'data-site="site-a"' in await mine.text()


async def test_a_fleet_too_big_for_one_page_lists_its_sites(
    client: Client, scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "MAX_CARDS", 2)
    await beat(client, scene, scene.a1)
    await log_in(client, "boss")
    text = await (await client.get("/board/")).text()
    assert "SN-A1" not in text
    a = text.index('href="/board/?site=site-a">site-a</a></td><td>2</td><td>1</td>')
    b = text.index('href="/board/?site=site-b">site-b</a></td><td>1</td><td>0</td>')
    assert a < b  # kiosks and online per site, in site order
    one_site = await (await client.get("/board/?site=site-a")).text()
    assert "SN-A1" in one_site and "SN-B1" not in one_site


async def test_an_auditor_reads_but_is_offered_no_action(client: Client, scene: Scene) -> None:
    await log_in(client, "reader")
    board = await (await client.get("/board/")).text()
    assert "SN-A1" in board and "SN-B1" in board and "/board/lookup" not in board
    kiosk = await (await client.get(f"/board/kiosks/{scene.a1.device_id}")).text()
    assert "SN-A1" in kiosk and "gate-form" not in kiosk
