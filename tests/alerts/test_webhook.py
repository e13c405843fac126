"""The per-site webhook: each alert change POSTed once, retried with backoff while the
receiver fails, never again after a restart, never twice by two processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from server.alerts import deliveries, hooks, webhook
from server.alerts.hooks import ALERTS
from server.alerts.settings import AlertSettings, SiteAlerts
from server.alerts.store import Alert, open_alerts
from server.appkeys import DATABASE
from server.config import ServerConfig

from .support import KIOSK, OTHER, alert_app

WAIT_S = 20.0


@dataclass
class Receiver:
    """A webhook endpoint on loopback that answers 500 to its first ``failures`` requests."""

    failures: int
    url: str = ""
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert body["delivery"] == request.headers["X-Siheyi-Delivery"]
        self.requests.append((body["delivery"], body))
        if len(self.requests) <= self.failures:
            return web.Response(status=500)
        self.accepted.append(body["delivery"])
        return web.Response(status=204)

    def tries(self, key: str) -> int:
        return sum(1 for k, _ in self.requests if k == key)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver(failures=2)
    app = web.Application()
    app.router.add_post("/hook", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recv.url = f"http://127.0.0.1:{port}/hook"
    yield recv
    await runner.cleanup()


def settings_for(recv: Receiver, **fleet: Any) -> AlertSettings:
    """A webhook for site-a only; site-b has none."""
    hook = SiteAlerts(webhook=recv.url, webhook_retry_s=0.05, webhook_timeout_s=5)
    return AlertSettings(sites={"site-a": hook}, **fleet)


async def until(done: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for a state (the bound only stops a hung test; nothing here is timed)."""
    try:
        async with asyncio.timeout(WAIT_S):
            while not await done():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {WAIT_S} s: {what}")


def accepted(receiver: Receiver, key: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return key in receiver.accepted

    return check


def marked(app: web.Application, alert_id: str, change: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        state = await app[DATABASE].run(deliveries.state_of, alert_id, change)
        return state is not None and state[0] != "pending"

    return check


async def test_a_change_is_retried_until_delivered_once_and_not_resent_after_a_restart(
    aiohttp_client: Any, config: ServerConfig, receiver: Receiver
) -> None:
    one = alert_app(config, None, settings_for(receiver))
    two = alert_app(config, None, settings_for(receiver))
    await aiohttp_client(one)
    await aiohttp_client(two)
    await hooks.observe_presence(one, KIOSK.device_id, KIOSK.site, KIOSK.gate, False)
    await hooks.observe_presence(two, OTHER.device_id, OTHER.site, OTHER.gate, False)
    [alert] = [a for a in await one[DATABASE].run(_open) if a.site == "site-a"]
    raised = f"{alert.id}:raised"
    await until(accepted(receiver, raised), "the raise is delivered")
    assert receiver.tries(raised) == 3  # two 500s, then accepted
    _, body = receiver.requests[-1]
    assert body["event"] == "alert_raised"
    assert (body["alert"]["id"], body["alert"]["kind"], body["alert"]["site"]) == (
        alert.id, "kiosk_offline", "site-a",
    )  # fmt: skip
    # the receiver took it before the sender heard its answer: wait for the row's update
    await until(marked(one, alert.id, "raised"), "the raise is marked sent")
    assert await one[DATABASE].run(deliveries.state_of, alert.id, "raised") == ("sent", 3)

    await hooks.observe_presence(two, KIOSK.device_id, KIOSK.site, KIOSK.gate, True)
    cleared = f"{alert.id}:cleared"
    await until(accepted(receiver, cleared), "the clear is delivered")
    await until(marked(one, alert.id, "cleared"), "the clear is marked sent")
    # a third process starting on the same database sends nothing again
    three = alert_app(config, None, settings_for(receiver))
    await aiohttp_client(three)
    async with aiohttp.ClientSession() as session:
        for app in (three, one, two):  # nor do the running ones, however often they look
            assert await webhook.send_due(app[ALERTS], session) == 0
    assert receiver.accepted == [raised, cleared]
    assert receiver.tries(cleared) == 1
    # site-b has no webhook: nothing was queued for its alert
    [other] = [a for a in await one[DATABASE].run(_open) if a.site == "site-b"]
    assert await one[DATABASE].run(deliveries.state_of, other.id, "raised") is None


async def test_a_delivery_is_given_up_after_its_attempts(
    aiohttp_client: Any, config: ServerConfig, receiver: Receiver
) -> None:
    receiver.failures = 1000
    hook = SiteAlerts(webhook=receiver.url, webhook_retry_s=0.05, webhook_attempts=3)
    app = alert_app(config, None, AlertSettings(sites={"site-a": hook}))
    await aiohttp_client(app)
    await hooks.observe_presence(app, KIOSK.device_id, KIOSK.site, KIOSK.gate, False)
    [alert] = await app[DATABASE].run(_open)

    async def given_up() -> bool:
        state = await app[DATABASE].run(deliveries.state_of, alert.id, "raised")
        return state is not None and state[0] == "failed"

    await until(given_up, "the delivery is given up")
    assert receiver.tries(f"{alert.id}:raised") == 3
    assert receiver.accepted == []


def _open(conn: Any) -> list[Alert]:
    return open_alerts(conn)


async def test_processes_racing_for_a_due_delivery_send_it_once(
    aiohttp_client: Any, config: ServerConfig, receiver: Receiver
) -> None:
    receiver.failures = 0
    apps = [alert_app(config, None, settings_for(receiver)) for _ in range(3)]
    for app in apps:
        await aiohttp_client(app)
    await hooks.observe_presence(apps[0], KIOSK.device_id, KIOSK.site, KIOSK.gate, False)
    async with aiohttp.ClientSession() as session:  # every sender at once, besides the loops
        await asyncio.gather(*(webhook.send_due(app[ALERTS], session) for app in apps))
        [alert] = await apps[0][DATABASE].run(_open)
        await until(marked(apps[0], alert.id, "raised"), "the raise is marked sent")
        await asyncio.gather(*(webhook.send_due(app[ALERTS], session) for app in apps))
    assert [key for key, _ in receiver.requests] == [f"{alert.id}:raised"]
