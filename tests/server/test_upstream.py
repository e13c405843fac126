"""The generic HTTP upstream adapter against fake upstream services (real aiohttp apps, port 0)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from core.checks import HealthCode, NatResult, Vaccination
from server.app import create_app
from server.config import HttpUpstream, ServerConfig, load_config, parse_config
from server.errors import UpstreamError
from server.verify.resilience import ResilientSource
from server.verify.upstream import HttpSource, dig

from .conftest import People

TOKEN = "tok-5f1e9c"
NUMBER = "11010519491231002X"


@dataclass
class Upstream:
    """A fake upstream: answers per ID number, switchable faults, records what it was sent."""

    server: TestServer
    answers: dict[str, Any] = field(default_factory=dict)
    mode: str = "ok"  # ok | 500 | slow | badjson | redirect
    seen: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return str(self.server.make_url("")).rstrip("/") + path  # make_url would quote braces


@pytest.fixture
async def upstream(aiohttp_server: Any) -> AsyncIterator[Upstream]:
    state: dict[str, Upstream] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        up = state["up"]
        number = request.match_info.get("number")
        body = await request.json() if request.method == "POST" else None
        if body is not None:
            number = body.get("id")
        up.seen.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "raw_path": request.raw_path,
                "auth": request.headers.get("Authorization"),
                "body": body,
                "number": number,
            }
        )
        if up.mode == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(up.release.wait(), 5)
        if up.mode == "500":
            return web.json_response({"error": "boom"}, status=500)
        if up.mode == "badjson":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if up.mode == "redirect":
            raise web.HTTPFound("/elsewhere")
        if number not in up.answers:
            return web.json_response({"error": "no such person"}, status=404)
        return web.json_response(up.answers[number])

    app = web.Application()
    app.router.add_route("*", "/api/v1/{kind}/{number}", handle)
    app.router.add_post("/query", handle)
    server: TestServer = await aiohttp_server(app)
    up = Upstream(server)
    state["up"] = up
    yield up
    up.release.set()


def spec(toml_sources: Mapping[str, Any], name: str, environ: Mapping[str, str]) -> HttpUpstream:
    config = parse_config({"sources": {name: toml_sources}}, "test.toml", environ=environ)
    http = config.source(name).http
    assert http is not None
    return http


def hc_table(up: Upstream) -> dict[str, Any]:
    return {
        "type": "http",
        "url": up.url("/api/v1/code/{id_number}"),
        "headers": {"Authorization": "Bearer ${HC_TOKEN}"},
        "timeout_s": 0.3,
        "mapping": {"colour": "data.color", "reason": "data.reason", "updated_at": "data.at"},
        "values": {"colour": {"0": "green", "1": "yellow", "2": "red"}},
    }


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_mapping_translation_and_auth_header(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    upstream.answers[NUMBER] = {
        "data": {"color": 1, "reason": "密接", "at": "2026-11-23T08:00:00+08:00"}
    }
    source = HttpSource(
        "health_code", spec(hc_table(upstream), "health_code", {"HC_TOKEN": TOKEN}), session
    )
    result = await source.lookup(NUMBER)
    assert result.status == "ok"
    assert result.value == HealthCode("yellow", "密接", datetime(2026, 11, 23, 0, 0, tzinfo=UTC))
    seen = upstream.seen[-1]
    assert seen["auth"] == f"Bearer {TOKEN}"  # ${HC_TOKEN} expanded at start-up, sent
    assert seen["method"] == "GET"
    assert seen["path"] == f"/api/v1/code/{NUMBER}"


async def test_id_number_is_url_quoted(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    odd = "ab/c d?e"
    upstream.answers[odd] = {"data": {"color": "green", "reason": "", "at": 0}}
    source = HttpSource(
        "health_code", spec(hc_table(upstream), "health_code", {"HC_TOKEN": "t"}), session
    )
    result = await source.lookup(odd)
    assert result.status == "ok"
    assert upstream.seen[-1]["raw_path"] == "/api/v1/code/" + quote(odd, safe="")
    assert result.value.updated_at == datetime(1970, 1, 1, tzinfo=UTC)  # epoch seconds


async def test_post_body_template(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    table = {
        "type": "http",
        "url": upstream.url("/query"),
        "method": "POST",
        "body": {"id": "{id_number}", "fields": ["flag", "area"]},
        "mapping": {"flagged": "risk.0.flag", "area": "risk.0.area"},
        "values": {"flagged": {"Y": True, "N": False}},
    }
    upstream.answers[NUMBER] = {"risk": [{"flag": "Y", "area": "上海市浦东新区"}]}
    source = HttpSource("travel", spec(table, "travel", {}), session)
    result = await source.lookup(NUMBER)
    assert result.status == "ok"
    assert result.value.flagged is True and result.value.area == "上海市浦东新区"
    assert upstream.seen[-1]["body"] == {"id": NUMBER, "fields": ["flag", "area"]}


async def test_nat_and_vaccination_mappings(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    nat = {
        "type": "http",
        "url": upstream.url("/api/v1/nat/{id_number}"),
        "mapping": {
            "result": "latest.result",
            "sampled_at": "latest.sampledAt",
            "lab": "latest.lab",
        },
        "values": {"result": {"N": "negative", "P": "positive"}},
    }
    vac = {
        "type": "http",
        "url": upstream.url("/api/v1/vac/{id_number}"),
        "mapping": {"doses": "count", "last_dose_at": "last"},
    }
    upstream.answers[NUMBER] = {
        "latest": {"result": "N", "sampledAt": "2026-11-22T09:00:00Z", "lab": "L1"},
        "count": "3",
        "last": "2022-01-10",
    }
    result = await HttpSource("nat", spec(nat, "nat", {}), session).lookup(NUMBER)
    assert result.value == NatResult("negative", datetime(2026, 11, 22, 9, tzinfo=UTC), "L1")
    result = await HttpSource("vaccination", spec(vac, "vaccination", {}), session).lookup(NUMBER)
    assert result.value == Vaccination(3, date(2022, 1, 10))


async def test_404_is_missing(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    source = HttpSource(
        "health_code", spec(hc_table(upstream), "health_code", {"HC_TOKEN": "t"}), session
    )
    result = await source.lookup(NUMBER)
    assert result.status == "missing"


@pytest.mark.parametrize(
    ("mode", "answer", "message"),
    [
        ("500", {}, "HTTP 500"),
        ("redirect", {}, "HTTP 302"),
        ("badjson", {}, "not JSON"),
        ("ok", {"data": {"reason": "", "at": 0}}, "no 'data.color'"),
        ("ok", {"data": {"color": 7, "reason": "", "at": 0}}, "field colour"),
        ("ok", {"data": {"color": 0, "reason": "", "at": "yesterday"}}, "field updated_at"),
        ("ok", {"data": {"color": 0, "reason": "", "at": "2026-11-23T08:00:00"}}, "UTC offset"),
        ("ok", ["not", "an", "object"], "no 'data.color'"),
    ],
)
async def test_bad_answers_raise(
    upstream: Upstream,
    session: aiohttp.ClientSession,
    mode: str,
    answer: Any,
    message: str,
) -> None:
    upstream.mode = mode
    upstream.answers[NUMBER] = answer
    source = HttpSource(
        "health_code", spec(hc_table(upstream), "health_code", {"HC_TOKEN": "t"}), session
    )
    with pytest.raises(UpstreamError, match=message) as info:
        await source.lookup(NUMBER)
    assert NUMBER not in str(info.value)
    assert upstream.server.host in str(info.value)


async def test_unreachable_upstream_raises_without_url(session: aiohttp.ClientSession) -> None:
    table = {
        "type": "http",
        "url": "http://127.0.0.1:9/api/{id_number}",  # discard port: nothing listens
        "mapping": {"flagged": "f"},
    }
    source = HttpSource("travel", spec(table, "travel", {}), session)
    with pytest.raises(UpstreamError) as info:
        await source.lookup(NUMBER)
    assert NUMBER not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_slow_upstream_times_out_and_resilience_serves_stale(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    upstream.answers[NUMBER] = {"data": {"color": 0, "reason": "", "at": 0}}
    http = HttpSource(
        "health_code", spec(hc_table(upstream), "health_code", {"HC_TOKEN": "t"}), session
    )
    source = ResilientSource(http, timeout_s=0.2)
    assert (await source.lookup(NUMBER)).status == "ok"
    upstream.mode = "slow"
    started = time.monotonic()
    result = await source.lookup(NUMBER)
    assert time.monotonic() - started < 0.6
    assert (result.status, result.error) == ("stale", "timeout")
    assert result.value.colour == "green"
    upstream.mode = "500"
    result = await source.lookup(NUMBER)
    assert (result.status, result.error) == ("stale", "failed")


def test_dig() -> None:
    doc = {"a": {"b": [{"c": 1}, {"c": None}]}}
    assert dig(doc, "a.b.0.c") == 1
    assert dig(doc, "a.b.1.c") is None  # present but null
    for path in ("a.x", "a.b.2.c", "a.b.c", "a.b.0.c.d"):
        assert dig(doc, path) is not None  # the absent marker, not None


def http_config(config: ServerConfig, up: Upstream, environ: Mapping[str, str]) -> ServerConfig:
    """``config`` with the travel check served by the fake upstream, 0.3 s timeout."""
    parsed = parse_config(
        {
            "sources": {
                "travel": {
                    "type": "http",
                    "url": up.url("/api/v1/travel/{id_number}"),
                    "headers": {"Authorization": "Bearer ${TRAVEL_TOKEN}"},
                    "timeout_s": 0.3,
                    "mapping": {"flagged": "flag", "area": "area"},
                }
            }
        },
        "siheyi.toml",
        environ=environ,
    )
    return replace(config, sources=parsed.sources)


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


@pytest.mark.parametrize("fault", ["slow", "500", "badjson", "down"])
async def test_verify_with_one_upstream_slow_or_down(
    aiohttp_client: Any,
    config: ServerConfig,
    auth: dict[str, str],
    people: People,
    upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    upstream.answers[people.passing] = {"flag": False, "area": ""}
    upstream.answers[people.yellow] = {"flag": False, "area": ""}
    app = create_app(http_config(config, upstream, {"TRAVEL_TOKEN": TOKEN}))
    client: TestClient = await aiohttp_client(app)

    body = await _verify(client, auth, people.passing)
    assert body["outcome"] == "pass"
    assert body["checks"]["travel"] == {"status": "ok", "flagged": False, "area": ""}
    assert upstream.seen[-1]["auth"] == f"Bearer {TOKEN}"
    body = await _verify(client, auth, people.unknown)  # 404 upstream, missing locally
    assert body["checks"]["travel"]["status"] == "missing"
    assert body["reasons"] == ["unknown_person"]

    if fault == "down":
        await upstream.server.close()
    else:
        upstream.mode = fault
    started = time.monotonic()
    body = await _verify(client, auth, people.passing)
    elapsed = time.monotonic() - started
    assert elapsed < 0.3 + 0.5  # timeout + margin, however the upstream misbehaves
    assert body["outcome"] == "pass"  # the last-known travel value, stale
    travel = body["checks"]["travel"]
    assert travel["stale"] is True and travel["status"] == "ok"
    assert travel["error"] == ("timeout" if fault == "slow" else "failed")
    assert 0 <= travel["age_s"] < 5

    body = await _verify(client, auth, people.yellow)  # never fetched: no last-known value
    assert body["outcome"] == "check"
    assert body["reasons"] == ["code_not_green", "source_error:travel"]
    assert "stale" not in body["checks"]["travel"]

    failing = [r for r in caplog.records if "source travel failing" in r.getMessage()]
    assert len(failing) == 1
    # everything logged in this process except the fake upstream's own access log
    ours = "\n".join(
        r.getMessage()
        for r in caplog.records
        if not (r.name == "aiohttp.access" and "/api/v1/" in r.getMessage())
    )
    assert "source travel failing" in ours
    for secret in (people.passing, people.yellow, TOKEN, quote(people.passing)):
        assert secret not in ours


async def test_config_file_with_http_source_runs(
    aiohttp_client: Any,
    tmp_path: Path,
    db_path: Path,
    auth: dict[str, str],
    people: People,
    upstream: Upstream,
) -> None:
    path = tmp_path / "siheyi.toml"
    path.write_text(
        f'[server]\ndatabase = "{db_path}"\n'
        '[sources.health_code]\ntype = "http"\n'
        f'url = "{upstream.url("/api/v1/code/{id_number}")}"\n'
        'headers = {Authorization = "Bearer ${HC_TOKEN}"}\n'
        '[sources.health_code.mapping]\ncolour = "data.color"\n'
        '[sources.health_code.values]\ncolour = {"0" = "green", "2" = "red"}\n',
        encoding="utf-8",
    )
    config = load_config(path, environ={"HC_TOKEN": TOKEN})
    upstream.answers[people.passing] = {"data": {"color": 2}}
    client: TestClient = await aiohttp_client(create_app(config))
    body = await _verify(client, auth, people.passing)
    assert body["checks"]["health_code"]["colour"] == "red"
    assert body["reasons"] == ["code_not_green"]
    assert upstream.seen[-1]["auth"] == f"Bearer {TOKEN}"
