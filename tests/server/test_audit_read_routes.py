"""``GET /v1/audit/events``, ``/v1/audit/export`` and ``/v1/audit/devices/{id}/chain`` on the
real app, logged in as each role, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from core.wire_audit import AuditEventPage, ChainReport
from server.audit import read_views
from server.audit.query import FIELDS
from server.config import ServerConfig
from server.storage.db import connect, transaction

from .audit_read_support import at, audit_app, events, store, three_kiosk_trail
from .users_support import Client, add_user, bearer, token_for


@dataclass
class Trail:
    client: Client
    ids: dict[str, str]
    tokens: dict[str, dict[str, str]]
    db: Path | str

    async def get(self, who: str, path: str, **params: str) -> tuple[int, Any]:
        resp = await self.client.get(path, params=params, headers=self.tokens[who])
        body = await resp.read()
        if resp.content_type == "application/json":
            return resp.status, json.loads(body)
        return resp.status, body.decode("utf-8")

    async def events(self, who: str, **params: str) -> list[tuple[str, int]]:
        """Every page's events as (kiosk name, seq), checking the pages' shape."""
        names = {v: k for k, v in self.ids.items()}
        out: list[tuple[str, int]] = []
        while True:
            status, body = await self.get(who, "/v1/audit/events", **params)
            assert status == 200, body
            page = msgspec.convert(body, AuditEventPage)
            out += [(names[e.device_id], e.seq) for e in page.events]
            if page.next is None:
                return out
            params = {**params, "cursor": page.next}


@pytest.fixture
async def trail(aiohttp_client: Any, config: ServerConfig, db_path: Path | str) -> Trail:
    """Kiosks a1, a2 at site-a and b1 at site-b, 20 events each; admin, auditor, guards."""
    ids = three_kiosk_trail(db_path)
    people = {"ada": ("admin", ()), "aud": ("auditor", ()), "gus": ("guard", ("site-a",))}
    people["gib"] = ("guard", ("site-b",))
    for name, (role, sites) in people.items():
        add_user(db_path, name, role, sites)
    client = await aiohttp_client(audit_app(config))
    tokens = {name: bearer(await token_for(client, name)) for name in people}
    return Trail(client, ids, tokens, db_path)


async def test_admin_and_auditor_read_everything_a_guard_its_sites(trail: Trail) -> None:
    everything = await trail.events("ada", limit="7")
    assert len(everything) == 60 and len(set(everything)) == 60
    assert await trail.events("aud", limit="1000") == everything
    assert await trail.events("gus") == [e for e in everything if e[0] != "b1"]
    assert await trail.events("gib", kind="fault") == [("b1", s) for s in (20, 15, 10, 5)]
    assert await trail.events("gus", site="site-a", gate="gate-2", outcome="pass") == [
        ("a2", s) for s in (16, 12, 8, 4)
    ]


async def test_filters_as_query_parameters(trail: Trail) -> None:
    got = await trail.events("ada", since="2026-11-23T08:01:41+08:00", until=at(200))
    assert sorted(got) == sorted(
        [("a2", s) for s in range(6, 11)] + [("b1", s) for s in range(6, 11)]
    )
    assert await trail.events("ada", device=trail.ids["a1"], offline="false", kind="fault") == [
        ("a1", 15),
        ("a1", 5),
    ]


async def test_empty_parameters_are_no_filter(trail: Trail) -> None:
    """The route as the issue writes it, ``?site=&device=&…&cursor=``, is the unfiltered trail."""
    empty = dict.fromkeys(("site", "device", "since", "until", "outcome", "kind", "cursor"), "")
    assert await trail.events("ada", **empty) == await trail.events("ada")


async def test_pages_while_events_arrive(trail: Trail) -> None:
    """New events between pages: every event there at the start comes once, in order."""
    before = await trail.events("ada")
    seen: list[tuple[str, int]] = []
    params = {"limit": "9"}
    more, second = events(21, 40), 500
    names = {v: k for k, v in trail.ids.items()}
    while True:
        status, body = await trail.get("ada", "/v1/audit/events", **params)
        assert status == 200
        seen += [(names[e["device_id"]], e["seq"]) for e in body["events"]]
        if body["next"] is None:
            break
        params["cursor"] = body["next"]
        if more:
            store(trail.db, trail.ids["b1"], more[:3], at(second))
            more, second = more[3:], second + 1
    assert seen == before


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "²"}, "limit"),
        ({"since": "9999-12-31T23:00:00-05:00"}, "since"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-11-23T08:00:00"}, "until"),
        ({"since": at(200), "until": at(100)}, "until"),
        ({"outcome": "maybe"}, "outcome"),
        ({"kind": "tap"}, "kind"),
        ({"offline": "perhaps"}, "offline"),
        ({"gate": "x" * 101}, "gate"),
        ({"device": "d\x01"}, "device"),
        ({"outcom": "pass"}, "outcom"),
    ],
)
async def test_every_bad_parameter_is_a_400_naming_it(
    trail: Trail, params: dict[str, str], named: str
) -> None:
    for path in ("/v1/audit/events", "/v1/audit/export"):  # (limit, cursor: unknown there)
        status, body = await trail.get("aud", path, **params)
        assert status == 400, (path, body)
        assert body["detail"].startswith(named), body


async def test_a_repeated_parameter_and_a_bad_format_are_400(trail: Trail) -> None:
    resp = await trail.client.get(
        "/v1/audit/events?site=site-a&site=site-b", headers=trail.tokens["ada"]
    )
    assert resp.status == 400 and (await resp.json())["detail"].startswith("site")
    status, body = await trail.get("ada", "/v1/audit/export", format="xml")
    assert status == 400 and body["detail"].startswith("format")


def routes(trail: Trail, device: str) -> list[tuple[str, dict[str, str]]]:
    """Every audit read route, asking about ``device`` (a kiosk name) or its site."""
    device_id = trail.ids.get(device, device)
    return [
        ("/v1/audit/events", {"site": "site-b"}),
        ("/v1/audit/events", {"device": device_id}),
        ("/v1/audit/export", {"site": "site-b"}),
        ("/v1/audit/export", {"device": device_id, "format": "json"}),
        (f"/v1/audit/devices/{device_id}/chain", {}),
    ]


@pytest.mark.parametrize("device", ["b1", "no-such-kiosk"])
async def test_a_guard_asking_for_another_site_gets_403_on_every_route(
    trail: Trail, device: str
) -> None:
    for path, params in routes(trail, device):
        status, body = await trail.get("gus", path, **params)
        assert status == 403, (path, params, body)
        assert body["error"] in ("forbidden_site", "forbidden")
    status, _ = await trail.get("gib", f"/v1/audit/devices/{trail.ids['b1']}/chain")
    assert status == 200  # b1 is gib's


async def test_every_route_wants_a_login(trail: Trail) -> None:
    for path, params in routes(trail, "a1"):
        resp = await trail.client.get(path, params=params)
        assert resp.status == 401, path


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_csv_export_streams_every_matching_event(
    trail: Trail, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(read_views, "EXPORT_PAGE", 7)  # several pages
    resp = await trail.client.get(
        "/v1/audit/export", params={"site": "site-a"}, headers=trail.tokens["aud"]
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Transfer-Encoding"] == "chunked"
    disposition = resp.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="audit-events-') and ".csv" in disposition
    text = await resp.text()
    assert text.splitlines()[0] == ",".join(FIELDS)
    rows = parse_csv(text)
    assert len(rows) == 40 and {r["site"] for r in rows} == {"site-a"}
    assert len({(r["device_id"], r["seq"]) for r in rows}) == 40
    first = rows[0]
    assert (first["received_at"], first["seq"], first["offline"]) == (at(301), "20", "true")
    assert json.loads(first["detail"])["tap_id"] == "k1-000020"
    assert "pseudonym" not in first and "ab" * 32 not in text


async def test_json_export_and_the_guard_scope(trail: Trail) -> None:
    status, body = await trail.get("gib", "/v1/audit/export", format="json", outcome="check")
    assert status == 200
    assert [(e["device_id"], e["seq"]) for e in body] == [
        (trail.ids["b1"], s) for s in (17, 13, 9, 1)
    ]
    status, body = await trail.get("ada", "/v1/audit/export", format="json", kind="guard")
    assert (status, body) == (200, [])


async def test_csv_cells_that_a_spreadsheet_would_run_are_defused(trail: Trail) -> None:
    with connect(trail.db) as conn, transaction(conn):
        conn.execute("UPDATE audit_events SET prompt = '=HYPERLINK(\"http://x\")' WHERE seq = 1")
    _, text = await trail.get("ada", "/v1/audit/export", device=trail.ids["a1"], kind="decision")
    assert parse_csv(text)[-1]["prompt"] == '\'=HYPERLINK("http://x")'


async def test_chain_route_ok_then_broken(trail: Trail) -> None:
    path = f"/v1/audit/devices/{trail.ids['a2']}/chain"
    status, body = await trail.get("aud", path)
    assert status == 200
    report = msgspec.convert(body, ChainReport)
    assert report.ok and report.events == 20 and report.breaks == [] and report.conflicts == 0
    with connect(trail.db) as conn, transaction(conn):
        conn.execute(
            "UPDATE audit_events SET outcome = 'pass' WHERE device_id = ? AND seq = 13",
            (trail.ids["a2"],),
        )
    status, body = await trail.get("gus", path)
    assert status == 200 and not body["ok"] and body["breaks"] == [13]
    status, body = await trail.get("ada", "/v1/audit/devices/no-such-kiosk/chain")
    assert status == 404 and body["error"] == "not_found"
