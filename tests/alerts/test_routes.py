"""``GET /v1/guard/alerts`` and ``POST /v1/guard/alerts/{id}/ack``: a guard's own sites only,
an acknowledgement needs a note and is kept with who and when."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from core.idnumbers import make_id_number
from server.alerts import hooks, store
from server.appkeys import DATABASE
from server.config import ServerConfig
from tests.server.users_support import add_user, bearer, token_for

from .support import KIOSK, OTHER, Clock, Published, alert_app, published

__all__ = ["published"]  # a fixture

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Any, config: ServerConfig, db_path: Path | str) -> Client:
    add_user(db_path, "guard-a", "guard", ["site-a"])
    add_user(db_path, "root", "admin")
    add_user(db_path, "reader", "auditor")
    client: Client = await aiohttp_client(alert_app(config, Clock()))
    app = client.server.app
    for device in (KIOSK, OTHER):
        await hooks.observe_presence(app, device.device_id, device.site, device.gate, False)
    return client


async def headers(client: Client, username: str) -> dict[str, str]:
    return bearer(await token_for(client, username))


async def alert_ids(client: Client, site: str) -> list[str]:
    alerts = await client.server.app[DATABASE].run(store.list_alerts, "all", [site], 10)
    return [a.id for a in alerts]


async def test_a_guard_lists_the_alerts_of_the_assigned_sites_only(client: Client) -> None:
    guard = await headers(client, "guard-a")
    resp = await client.get("/v1/guard/alerts", headers=guard)
    assert resp.status == 200
    [alert] = (await resp.json())["alerts"]
    assert (alert["site"], alert["device_id"], alert["kind"], alert["state"]) == (
        "site-a", KIOSK.device_id, "kiosk_offline", "open",
    )  # fmt: skip
    resp = await client.get("/v1/guard/alerts?site=site-a", headers=guard)
    assert [a["site"] for a in (await resp.json())["alerts"]] == ["site-a"]
    resp = await client.get("/v1/guard/alerts?site=site-b", headers=guard)
    assert resp.status == 403 and (await resp.json())["error"] == "forbidden_site"
    admin = await headers(client, "root")
    resp = await client.get("/v1/guard/alerts", headers=admin)
    assert sorted(a["site"] for a in (await resp.json())["alerts"]) == ["site-a", "site-b"]


async def test_open_or_all_and_who_may_ask(client: Client) -> None:
    app = client.server.app
    await hooks.observe_presence(app, KIOSK.device_id, KIOSK.site, KIOSK.gate, True)
    guard = await headers(client, "guard-a")
    resp = await client.get("/v1/guard/alerts", headers=guard)
    assert (await resp.json())["alerts"] == []
    resp = await client.get("/v1/guard/alerts?state=all", headers=guard)
    [cleared] = (await resp.json())["alerts"]
    assert cleared["state"] == "cleared" and cleared["cleared_at"] is not None
    for query in ("state=nope", "limit=0", "limit=x"):
        assert (await client.get(f"/v1/guard/alerts?{query}", headers=guard)).status == 400
    assert (await client.get("/v1/guard/alerts")).status == 401
    # Auditors read every site's alerts (the board's alerts page) but cannot acknowledge.
    auditor = await headers(client, "reader")
    resp = await client.get("/v1/guard/alerts?state=all", headers=auditor)
    assert resp.status == 200 and [a["id"] for a in (await resp.json())["alerts"]]
    ack = await client.post(
        f"/v1/guard/alerts/{cleared['id']}/ack", json={"note": "seen"}, headers=auditor
    )
    assert ack.status == 403 and (await ack.json())["error"] == "forbidden"


async def test_a_guard_acknowledges_an_alert_with_a_note_kept_with_who_and_when(
    client: Client, published: Published
) -> None:
    [alert_id] = await alert_ids(client, "site-a")
    guard = await headers(client, "guard-a")
    url = f"/v1/guard/alerts/{alert_id}/ack"
    resp = await client.post(url, json={"note": "cable reseated"}, headers=guard)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["id"], body["acked_by"], body["note"], body["state"]) == (
        alert_id, "guard-a", "cable reseated", "open",
    )  # fmt: skip
    await client.post(url, json={"note": "checked again"}, headers=guard)
    acks = await client.server.app[DATABASE].run(store.acks, alert_id)
    # the test clock does not move: two acknowledgements in one second are both kept
    assert [(who, note) for who, _, note in acks] == [
        ("guard-a", "cable reseated"),
        ("guard-a", "checked again"),
    ]
    acked = [data for _, kind, data in published.events if kind == "alert_acked"]
    assert [(e["id"], e["site"], e["acked_by"]) for e in acked] == [
        (alert_id, "site-a", "guard-a")
    ] * 2


async def test_an_acknowledgement_needs_a_real_note(client: Client) -> None:
    [alert_id] = await alert_ids(client, "site-a")
    guard = await headers(client, "guard-a")
    url = f"/v1/guard/alerts/{alert_id}/ack"
    clear_id = make_id_number("110101", "19900307", "451")
    phone = {"note": "called 139-0013-9000"}
    bad = ({}, {"note": ""}, {"note": "   "}, {"note": "x" * 501}, {"note": clear_id}, phone)
    for body in bad:
        resp = await client.post(url, json=body, headers=guard)
        assert resp.status == 400, body
    resp = await client.post("/v1/guard/alerts/nosuchalert/ack", json={"note": "x"}, headers=guard)
    assert resp.status == 404
    alerts = await client.server.app[DATABASE].run(store.list_alerts, "all", ["site-a"], 10)
    assert [a.acked_by for a in alerts] == [None]


@pytest.mark.parametrize("route", ["list", "ack"])
async def test_every_alert_route_refuses_another_sites_data_to_a_guard(
    client: Client, route: str
) -> None:
    [other_id] = await alert_ids(client, "site-b")
    guard = await headers(client, "guard-a")
    if route == "list":
        resp = await client.get("/v1/guard/alerts?site=site-b", headers=guard)
    else:
        resp = await client.post(
            f"/v1/guard/alerts/{other_id}/ack", json={"note": "not mine"}, headers=guard
        )
    assert resp.status == 403
    assert (await resp.json())["error"] == "forbidden_site"
    alerts = await client.server.app[DATABASE].run(store.list_alerts, "all", ["site-b"], 10)
    assert [a.acked_by for a in alerts] == [None]
