"""The board in real headless Chromium (Debian's /usr/bin/chromium through Playwright),
against a real server on loopback with a real kiosk agent tapping simulated cards.

Every page is checked for Content-Security-Policy violations: the board must work with no
inline script or style. The test that shows the board with live data writes docs/board.png.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from provisioning.registry import DeviceBundle
from server.alerts.hooks import observe_heartbeat
from server.appkeys import DIRECTORY
from server.events import presence
from server.verify.demodata import generate_people, load_demo_data, pick_demo_people
from tests.board.live import Kiosk, Live
from tests.e2e_support import NOW, PEOPLE, RELAY, SEED, prompt_cache
from tests.server.users_support import PASSWORD, add_user

__all__ = ["prompt_cache"]  # a fixture: prompts are rendered once per test session
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "board.png"
#: Waits for what the page shows: generous for a loaded CI machine; a page that is right
#: passes at once.
WAIT_MS = 15_000
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@dataclass
class Scene:
    live: Live
    kiosk: Kiosk  # site-a, gate-1: a real agent
    a2: DeviceBundle  # site-a, gate-2: heard from, reader unplugged
    a3: DeviceBundle  # site-a, gate-2: never heard from
    b1: DeviceBundle  # site-b
    people: dict[str, list[str]]


@pytest.fixture
def scene(tmp_path: Path, prompt_cache: Path) -> Iterator[Scene]:
    db = tmp_path / "server.db"
    load_demo_data(db, PEOPLE, SEED, now=NOW)
    picked = pick_demo_people(generate_people(PEOPLE, SEED, NOW), NOW, {"pass": 2, "check": 2})
    people: dict[str, list[str]] = {}
    for outcome, number in picked:
        people.setdefault(outcome, []).append(number)
    add_user(db, "guard-a", "guard", ["site-a"])
    add_user(db, "guard-b", "guard", ["site-b"])
    add_user(db, "boss", "admin")
    live = Live(db)
    try:
        a1 = live.add_kiosk("SN-0101", "site-a", "东门 gate-1")
        a2 = live.add_kiosk("SN-0102", "site-a", "北门 gate-2")
        a3 = live.add_kiosk("SN-0103", "site-a", "北门 gate-2")
        b1 = live.add_kiosk("SN-0201", "site-b", "gate-1")
        taps = [("pass", [], False), ("check", ["code_yellow"], False), ("pass", [], True)]
        live.report(a2, taps, reader={"connected": False}, journal_pending=17)
        live.report(b1, [("pass", [], False)])
        (tmp_path / "a1").mkdir()
        kiosk = Kiosk(live, a1, tmp_path / "a1", prompt_cache)
        try:
            yield Scene(live, kiosk, a2, a3, b1, people)
        finally:
            kiosk.stop()
    finally:
        live.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    opened = context.new_page()
    refused: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            refused.append(message.text)

    opened.on("console", watch)
    crashed: list[str] = []
    opened.on("pageerror", lambda error: crashed.append(str(error)))
    yield opened
    context.close()
    assert refused == [], "the board broke its Content-Security-Policy"
    assert crashed == [], "the board's script failed"


def log_in(page: Page, live: Live, username: str) -> None:
    page.goto(f"{live.url}/board/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/board/")
    expect(page.locator("#live")).to_be_visible()  # the event stream is open


def go_to(page: Page, path: str) -> None:
    """Follow the nav link to ``path`` and wait until the page's modules have run: a form
    used before its script is attached would be submitted natively (without CSRF token)."""
    page.click(f"nav a[href='{path}']")
    page.wait_for_url(f"**{path}")
    page.wait_for_load_state("load")


def card(page: Page, device_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f"#kiosk-{device_id}")


def test_log_in_and_see_the_own_sites_kiosks(page: Page, scene: Scene) -> None:
    page.goto(f"{scene.live.url}/board/")
    expect(page).to_have_url(f"{scene.live.url}/board/login")
    page.fill("input[name=username]", "guard-a")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("用户名或密码错误")
    log_in(page, scene.live, "guard-a")
    kiosk_id = scene.kiosk.bundle.device_id
    expect(card(page, kiosk_id)).to_have_class("kiosk up")
    expect(card(page, scene.a2.device_id).locator("[data-field=reader]")).to_have_text("故障")
    expect(card(page, scene.a3.device_id)).to_have_class("kiosk down")
    assert page.locator("article.kiosk").count() == 3
    assert "SN-0201" not in page.content()
    page.click("a.lang")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(card(page, scene.a2.device_id).locator("[data-field=reader]")).to_have_text("fault")


def test_another_sites_kiosk_page_is_refused(page: Page, scene: Scene) -> None:
    log_in(page, scene.live, "guard-b")
    assert page.locator("article.kiosk").count() == 1
    own = page.goto(f"{scene.live.url}/board/kiosks/{scene.b1.device_id}")
    assert own is not None and own.status == 200
    other = page.goto(f"{scene.live.url}/board/kiosks/{scene.kiosk.bundle.device_id}")
    assert other is not None and other.status == 403
    assert "SN-0101" not in page.content()
    api = page.request.get(f"{scene.live.url}/v1/guard/kiosks/{scene.a2.device_id}")
    assert api.status == 403


def test_a_tap_appears_live_and_the_screenshot(page: Page, scene: Scene) -> None:
    log_in(page, scene.live, "guard-a")
    kiosk = card(page, scene.kiosk.bundle.device_id)
    expect(kiosk.locator("[data-count=pass] b")).to_have_text("0")
    person = scene.people["pass"][0]
    assert scene.kiosk.tap(person) == "pass"
    masked = person[:4] + "*" * 10 + person[-4:]
    expect(page.locator("#taps tr").first).to_contain_text(masked)
    expect(kiosk.locator("[data-count=pass] b")).to_have_text("1")
    expect(page.locator("[data-total=pass] b")).to_have_text("3")  # 2 uploaded + this one
    expect(kiosk.locator("[data-field=last_tap]")).to_contain_text("通行")
    other = scene.people["check"][0]
    assert scene.kiosk.tap(other) == "check"
    expect(page.locator("#taps tr").first).to_contain_text(other[-4:])
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_a_kiosk_going_offline_appears(
    page: Page, scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat fallback, made fast: a kiosk quiet for 2 s is announced down (the
    command socket, when the kiosk holds one, marks it down as soon as it closes)."""
    monkeypatch.setattr(presence, "WATCH_EVERY_S", 0.2)
    monkeypatch.setattr(presence, "DOWN_AFTER_S", 2.0)
    log_in(page, scene.live, "guard-a")
    kiosk = card(page, scene.kiosk.bundle.device_id)
    expect(kiosk).to_have_class("kiosk up")
    scene.kiosk.stop()
    expect(kiosk).to_have_class("kiosk down")
    expect(kiosk.locator("[data-field=online]")).to_have_text("离线")


def test_a_change_without_the_csrf_token_is_refused(page: Page, scene: Scene) -> None:
    log_in(page, scene.live, "guard-a")
    status = page.evaluate(
        """async () => (await fetch('/board/logout', {method: 'POST'})).status"""
    )
    assert status == 403
    page.reload()
    expect(page).to_have_url(f"{scene.live.url}/board/")  # still logged in
    page.click("header form button[type=submit]")  # the real logout form carries the token
    expect(page).to_have_url(f"{scene.live.url}/board/login")


def test_the_remote_gate_opens_the_relay_and_is_journalled(page: Page, scene: Scene) -> None:
    assert scene.kiosk.agent.commands is not None  # the runtime gives the agent its link
    log_in(page, scene.live, "guard-a")
    device_id = scene.kiosk.bundle.device_id
    page.goto(f"{scene.live.url}/board/kiosks/{device_id}")
    expect(page.locator("#live")).to_be_visible()
    relay = scene.kiosk.pins.pin(RELAY)
    before = len(relay.states)
    page.fill("#gate-form input[name=reason]", "送货车辆")
    page.click("#gate-form button[type=submit]")
    expect(page.locator("#gate-result")).to_contain_text("终端已确认开闸")
    assert True in [s.state for s in relay.states[before:]]
    expect(page.locator("#gate-form input[name=reason]")).to_have_value("")
    page.click("#commands button[data-command=speak_test]")
    expect(page.locator("#command-result")).to_contain_text("终端已确认")
    guard_events = scene.live.wait_for_rows(
        "SELECT detail FROM audit_events WHERE device_id = ? AND kind = 'guard'", (device_id,)
    )
    assert "guard-a" in guard_events[0][0] and "送货车辆" in guard_events[0][0]


def test_the_gate_of_a_kiosk_without_a_link_is_refused_in_words(page: Page, scene: Scene) -> None:
    log_in(page, scene.live, "guard-a")
    page.goto(f"{scene.live.url}/board/kiosks/{scene.a3.device_id}")
    page.click("#gate-form button[type=submit]")  # the reason is required: nothing is sent
    expect(page.locator("#gate-result")).to_be_empty()
    page.fill("#gate-form input[name=reason]", "测试")
    page.click("#gate-form button[type=submit]")
    result = page.locator("#gate-result")
    expect(result).to_contain_text("失败")
    expect(result).to_contain_text("no live connection")  # 409 offline, not 403 csrf
    expect(result).to_have_class("fault")


def test_a_lookup_shows_reasons_and_recovery(page: Page, scene: Scene) -> None:
    log_in(page, scene.live, "guard-a")
    go_to(page, "/board/lookup")
    person = scene.people["check"][0]
    page.fill("#lookup-form input[name=id_number]", person)
    page.click("#lookup-form button[type=submit]")
    outcome = page.locator("#lookup-outcome")
    expect(outcome).to_contain_text("核查")
    expect(outcome).to_contain_text(person[-4:])
    assert person not in page.content()  # masked on screen, and the field was cleared
    result = page.locator("#lookup-result")
    assert result.locator("ul").first.locator("li").count() >= 1  # reasons
    assert result.locator("ul").nth(1).locator("li").count() >= 1  # recovery texts
    expect(result.locator("[data-check=health_code]")).to_contain_text("颜色")
    expect(result.locator("[data-check=nat]")).to_contain_text("状态")


def test_an_admin_looks_up_at_a_chosen_site(page: Page, scene: Scene) -> None:
    log_in(page, scene.live, "boss")
    assert page.locator("article.kiosk").count() == 4  # every site
    page.goto(f"{scene.live.url}/board/lookup?lang=en")
    page.select_option("#lookup-form select[name=site]", "site-b")
    page.fill("#lookup-form input[name=id_number]", scene.people["pass"][0])
    page.click("#lookup-form button[type=submit]")
    expect(page.locator("#lookup-outcome")).to_contain_text("pass")


def test_the_audit_trail_pages_with_more(page: Page, scene: Scene) -> None:
    scene.live.report(scene.a3, [("pass", [], False)] * 12)
    log_in(page, scene.live, "guard-a")
    go_to(page, "/board/audit")
    rows = page.locator("#events tr")
    expect(rows.first).to_be_visible()
    page.select_option("select[name=limit]", "10")
    page.fill("input[name=device]", scene.a3.device_id)
    page.click("#audit-form button[type=submit]")
    expect(rows).to_have_count(10)
    page.click("#more")
    expect(rows).to_have_count(12)
    expect(page.locator("#more")).to_be_hidden()
    page.fill("input[name=device]", "")
    page.select_option("select[name=outcome]", "check")
    page.click("#audit-form button[type=submit]")
    expect(rows).to_have_count(1)  # SN-0102's one check (site-b's taps are never shown)
    expect(rows.first).to_contain_text("code_yellow")
    href = page.locator("a[data-format=csv]").get_attribute("href")
    assert href is not None and "outcome=check" in href and "limit" not in href
    export = page.request.get(scene.live.url + href)
    assert export.status == 200 and export.text().count("1101**********0002") == 1


def alerts_hooked() -> bool:
    """Whether heartbeats reach the alert rules (server/fleet/device_views.py, the lead)."""
    import inspect

    from server.fleet import device_views

    return "observe_heartbeat" in inspect.getsource(device_views)


def test_a_reader_unplug_raises_an_alert_a_guard_acknowledges(page: Page, scene: Scene) -> None:
    log_in(page, scene.live, "guard-a")
    go_to(page, "/board/alerts")
    expect(page.locator("#live")).to_be_visible()
    device_id = scene.kiosk.bundle.device_id
    alert = page.locator("#alerts tr", has_text=device_id).filter(has_text="读卡器故障")
    expect(alert).to_have_count(0)
    scene.kiosk.sim.stop()  # the reader's cable is pulled
    if not alerts_hooked():  # until the server's heartbeat calls the rules itself
        scene.live.call(hand_heartbeat_to_alerts(scene))
    expect(alert).to_have_count(1)
    alert.locator("input[name=note]").fill("已重新插好读卡器")
    alert.locator("button[type=submit]").click()
    expect(alert).to_contain_text("已确认")
    expect(alert).to_contain_text("guard-a")
    page.goto(f"{scene.live.url}/board/")
    expect(card(page, device_id).locator("[data-field=reader]")).to_have_text("故障")


async def hand_heartbeat_to_alerts(scene: Scene) -> None:
    """What the heartbeat route does once wired: the kiosk's status, to the alert rules."""
    agent, app = scene.kiosk.agent, scene.live.app
    while (await agent.status())["reader"]["connected"]:
        await asyncio.sleep(0.05)
    state = await app[DIRECTORY].get(scene.kiosk.bundle.device_id)
    assert state is not None
    await observe_heartbeat(app, state.device, await agent.status())
