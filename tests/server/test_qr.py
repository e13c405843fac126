"""QR credentials: /v1/verify with kind "qr", the qr_token import and token resolution."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from provisioning.registry import DeviceBundle
from server.app import create_app
from server.config import ServerConfig, parse_config
from server.errors import ConfigError
from server.storage.db import connect
from server.verify.importer import import_csv
from server.verify.qr import ChainResolver, Resolution, token_digest, token_ref

from .conftest import People, ts, write_csv

GOOD = "https://hc.example.gov.cn/qr?c=Zk9x-2b7Q&t=1700000000"
OLD = "HC:expired-7781"
YELLOW = "HC:yellow 3f9a"  # a space inside is fine: printable


_TAPS = itertools.count(1)


def tap_id() -> str:
    """A fresh tap id per request (the server refuses a replayed one)."""
    return f"k1-qr-{next(_TAPS):06d}"


def masked(number: str) -> str:
    return number[:4] + "*" * 10 + number[-4:]


@pytest.fixture
def tokens(db_path: Path, tmp_path: Path, people: People) -> dict[str, str]:
    now = datetime.now(UTC)
    rows = [
        (GOOD, people.passing.lower(), ts(now + timedelta(hours=1))),
        (OLD, people.passing, ts(now - timedelta(seconds=1))),
        (YELLOW, people.yellow, ts(now + timedelta(days=1))),
    ]
    path = write_csv(tmp_path / "qr.csv", ["token", "id_number", "expires_at"], rows)
    report = import_csv(db_path, "qr_token", path)
    assert report.ok and report.imported == 3, report.errors
    return {GOOD: people.passing, OLD: people.passing, YELLOW: people.yellow}


async def verify_qr(client: TestClient, auth: dict[str, str], token: Any) -> dict[str, Any]:
    resp = await client.post(
        "/v1/verify",
        json={"tap_id": tap_id(), "credential": {"kind": "qr", "token": token}},
        headers=auth,
    )
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_resolved_token_gets_the_four_in_one_decision(
    client: TestClient, auth: dict[str, str], people: People, tokens: dict[str, str]
) -> None:
    body = await verify_qr(client, auth, GOOD)
    assert body["outcome"] == "pass"
    assert body["prompt"] == "绿码通行"
    assert body["masked_id"] == masked(people.passing)
    assert set(body["checks"]) == {"health_code", "nat", "vaccination", "travel"}
    assert body["checks"]["vaccination"]["doses"] == 3
    assert GOOD not in str(body) and people.passing not in str(body)

    yellow = await verify_qr(client, auth, YELLOW)
    assert (yellow["outcome"], yellow["reasons"]) == ("check", ["code_not_green"])
    assert yellow["masked_id"] == masked(people.yellow)

    # The same person by ID number gets the same decision.
    resp = await client.post(
        "/v1/verify",
        json={"tap_id": tap_id(), "credential": {"kind": "id_card", "id_number": people.yellow}},
        headers=auth,
    )
    by_id = await resp.json()
    assert (by_id["outcome"], by_id["reasons"], by_id["checks"]) == (
        yellow["outcome"],
        yellow["reasons"],
        yellow["checks"],
    )


@pytest.mark.parametrize(
    "token",
    [
        OLD,  # expired
        "HC:never-issued",  # unknown
        "SHY1.abc.def",  # a foreign code (an offline pass is the kiosk's business)
        "bell\x07",  # garbage: a control character
        "line\nbreak",
        "x" * 1024,  # the longest allowed, unknown
        GOOD + " x",  # one character more than a known token
    ],
)
async def test_unknown_expired_garbage_tokens_are_invalid_credentials(
    client: TestClient, auth: dict[str, str], tokens: dict[str, str], token: str
) -> None:
    body = await verify_qr(client, auth, token)
    assert body["outcome"] == "invalid_credential"
    assert body["reasons"] == ["unknown_qr"]
    assert body["prompt"] == "证件无效，请重新刷卡"
    assert body["checks"] == {}
    assert body["masked_id"] == ""


async def test_surrounding_blanks_are_not_part_of_the_token(
    client: TestClient, auth: dict[str, str], tokens: dict[str, str]
) -> None:
    assert (await verify_qr(client, auth, f"  {GOOD}\t"))["outcome"] == "pass"


@pytest.mark.parametrize(
    ("credential", "field"),
    [
        ({"kind": "qr"}, "credential.token: required"),
        ({"kind": "qr", "token": ""}, "credential.token: expected `str` of length 1..1024"),
        ({"kind": "qr", "token": "x" * 1025}, "credential.token: expected `str` of length 1..1024"),
        ({"kind": "qr", "token": 42}, "credential.token: expected `str`, got `int`"),
        ({"kind": "qr", "token": None}, "credential.token: expected `str`, got `null`"),
        ({"kind": "barcode", "token": "x"}, "credential.kind"),
    ],
)
async def test_malformed_qr_requests_are_400(
    client: TestClient, auth: dict[str, str], credential: dict[str, Any], field: str
) -> None:
    resp = await client.post(
        "/v1/verify", json={"tap_id": tap_id(), "credential": credential}, headers=auth
    )
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "bad_request"
    assert body["detail"].startswith(field), body


async def test_token_is_never_logged_nor_stored_in_clear(
    client: TestClient,
    auth: dict[str, str],
    tokens: dict[str, str],
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await verify_qr(client, auth, GOOD)
    await verify_qr(client, auth, "HC:never-issued")
    text = caplog.text
    assert GOOD not in text and "never-issued" not in text
    assert token_ref(GOOD) in text  # length and a short hash only
    short_hash = hashlib.sha256(GOOD.encode()).hexdigest()[:8]
    assert token_ref(GOOD) == f"len={len(GOOD)} sha256:{short_hash}"
    with connect(db_path) as conn:
        rows = conn.execute("SELECT token_sha256, id_number FROM qr_tokens").fetchall()
    assert (token_digest(GOOD), tokens[GOOD]) in rows  # upper-cased check character
    if isinstance(db_path, Path):  # the SQLite files themselves hold no token
        raw = b"".join(p.read_bytes() for p in db_path.parent.glob("siheyi.db*"))
        assert GOOD.encode() not in raw and b"expired-7781" not in raw


def test_import_reports_bad_rows_without_echoing_tokens(
    db_path: Path, tmp_path: Path, people: People
) -> None:
    secret = "SECRET-TOKEN-" + "z" * 1100
    rows = [
        ("", people.passing, "2030-01-01T00:00:00+08:00"),
        (secret, people.passing, "2030-01-01T00:00:00+08:00"),
        ("bad\x01token", people.passing, "2030-01-01T00:00:00+08:00"),
        ("ok-token", people.passing[:17] + "0", "2030-01-01T00:00:00+08:00"),
        ("ok-token-2", people.passing, "2030-01-01T00:00:00"),
    ]
    path = write_csv(tmp_path / "qr.csv", ["token", "id_number", "expires_at"], rows)
    report = import_csv(db_path, "qr_token", path)
    assert not report.ok and report.imported == 0
    problems = {(e.row, e.column) for e in report.errors}
    assert problems == {
        (2, "token"),
        (3, "token"),
        (4, "token"),
        (5, "id_number"),
        (6, "expires_at"),
    }
    assert "SECRET" not in str(report.to_json()) and "bad\x01" not in str(report.to_json())
    # The header must be exactly these columns.
    bad_header = write_csv(tmp_path / "h.csv", ["token", "id_number"], [])
    assert {e.column for e in import_csv(db_path, "qr_token", bad_header).errors} == {"expires_at"}


# -- resolution through the health-code upstream -------------------------------------------


@dataclass
class HealthCodeUpstream:
    """A fake provincial health-code service: colour by ID number, person by token."""

    server: TestServer
    colours: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, Any] = field(default_factory=dict)
    mode: str = "ok"  # ok | 500 | slow
    paths: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return str(self.server.make_url("")).rstrip("/") + path


@pytest.fixture
async def hc_upstream(aiohttp_server: Any) -> AsyncIterator[HealthCodeUpstream]:
    state: dict[str, HealthCodeUpstream] = {}
    release = asyncio.Event()

    async def code(request: web.Request) -> web.Response:
        up = state["up"]
        colour = up.colours.get(request.match_info["number"])
        if colour is None:
            return web.json_response({}, status=404)
        return web.json_response({"data": {"color": colour}})

    async def resolve(request: web.Request) -> web.Response:
        up = state["up"]
        up.paths.append(request.raw_path)
        if up.mode == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 5)
        if up.mode == "500":
            return web.json_response({"error": "boom"}, status=500)
        token = request.match_info["token"]
        if token not in up.tokens:
            return web.json_response({"msg": "no such code"}, status=404)
        return web.json_response({"data": {"idNo": up.tokens[token]}})

    app = web.Application()
    app.router.add_get("/code/{number}", code)
    app.router.add_get("/resolve/{token}", resolve)
    server: TestServer = await aiohttp_server(app)
    up = HealthCodeUpstream(server)
    state["up"] = up
    yield up
    release.set()


def hc_sources(up: HealthCodeUpstream) -> dict[str, Any]:
    return {
        "health_code": {
            "type": "http",
            "timeout_s": 0.3,
            "url": up.url("/code/{id_number}"),
            "resolve_url": up.url("/resolve/{token}"),
            "mapping": {"colour": "data.color", "id_number": "data.idNo"},
        }
    }


@pytest.fixture
async def hc_client(
    aiohttp_client: Any,
    config: ServerConfig,
    device: DeviceBundle,
    hc_upstream: HealthCodeUpstream,
    people: People,
) -> TestClient:
    parsed = parse_config({"sources": hc_sources(hc_upstream)}, "siheyi.toml")
    hc_upstream.colours[people.passing] = "green"
    hc_upstream.colours[people.yellow] = "yellow"
    hc_upstream.tokens["UP:passing"] = people.passing
    hc_upstream.tokens["UP:yellow"] = people.yellow.lower()
    hc_upstream.tokens["UP/slash?q=1 2"] = people.passing
    hc_upstream.tokens["UP:null"] = None
    hc_upstream.tokens["UP:garbage"] = "12345"
    app = create_app(replace(config, sources=parsed.sources))
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def test_upstream_resolves_tokens(
    hc_client: TestClient,
    auth: dict[str, str],
    people: People,
    hc_upstream: HealthCodeUpstream,
    tokens: dict[str, str],
) -> None:
    body = await verify_qr(hc_client, auth, "UP:passing")
    assert (body["outcome"], body["masked_id"]) == ("pass", masked(people.passing))
    body = await verify_qr(hc_client, auth, "UP:yellow")
    assert (body["outcome"], body["reasons"]) == ("check", ["code_not_green"])
    assert body["masked_id"] == masked(people.yellow)
    # The token goes URL-quoted into the path: "/", "?" and " " cannot change the URL.
    assert (await verify_qr(hc_client, auth, "UP/slash?q=1 2"))["outcome"] == "pass"
    assert hc_upstream.paths[-1] == "/resolve/UP%2Fslash%3Fq=1%202"
    # A locally imported token still resolves (local table first, upstream not asked).
    asked = len(hc_upstream.paths)
    assert (await verify_qr(hc_client, auth, YELLOW))["masked_id"] == masked(people.yellow)
    assert len(hc_upstream.paths) == asked
    for unknown in ("UP:nobody", "UP:null"):
        body = await verify_qr(hc_client, auth, unknown)
        assert (body["outcome"], body["reasons"]) == ("invalid_credential", ["unknown_qr"])


@pytest.mark.parametrize("mode", ["500", "slow", "garbage"])
async def test_resolver_failure_is_a_check_not_an_invalid_code(
    hc_client: TestClient,
    auth: dict[str, str],
    hc_upstream: HealthCodeUpstream,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    token = "UP:garbage" if mode == "garbage" else "UP:passing"
    hc_upstream.mode = "ok" if mode == "garbage" else mode
    started = asyncio.get_running_loop().time()
    body = await verify_qr(hc_client, auth, token)
    assert asyncio.get_running_loop().time() - started < 2.0
    assert body["outcome"] == "check"
    assert body["reasons"] == ["source_error:health_code"]
    assert body["checks"] == {} and body["masked_id"] == ""
    assert token not in caplog.text and "UP%3A" not in caplog.text


async def test_chain_resolver_bounds_and_order() -> None:
    now = datetime.now(UTC)

    class Fixed:
        def __init__(self, answer: Resolution | Exception, delay: float = 0.0) -> None:
            self.answer = answer
            self.delay = delay
            self.calls = 0

        async def resolve(self, token: str, now: datetime) -> Resolution:
            self.calls += 1
            await asyncio.sleep(self.delay)
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    broken = Fixed(RuntimeError("boom"))
    slow = Fixed(Resolution.found("x"), delay=1.0)
    knows = Fixed(Resolution.found("11010519491231002X"))
    assert (await ChainResolver([broken, knows], timeout_s=0.1).resolve("t", now)).status == "ok"
    failed = await ChainResolver([slow, Fixed(Resolution.unknown())], timeout_s=0.05).resolve(
        "t", now
    )
    assert (failed.status, failed.error) == ("error", "timeout")
    empty = Fixed(Resolution.unknown())
    assert (await ChainResolver([empty], timeout_s=1).resolve("\x00", now)).status == "unknown"
    assert empty.calls == 0  # garbage never reaches a resolver


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (
            {"nat": {"type": "http", "url": "http://u/{id_number}", "resolve_url": "http://u/{token}",
                     "mapping": {"result": "r", "sampled_at": "s"}}},
            "[sources.nat] resolve_url: only allowed for [sources.health_code]",
        ),
        (
            {"health_code": {"type": "http", "url": "http://u/{id_number}",
                             "resolve_url": "http://u/code",
                             "mapping": {"colour": "c", "id_number": "i"}}},
            "[sources.health_code] resolve_url: needs {token} in the url",
        ),
        (
            {"health_code": {"type": "http", "url": "http://u/{id_number}",
                             "resolve_url": "http://u/{token}/{id_number}",
                             "mapping": {"colour": "c", "id_number": "i"}}},
            "[sources.health_code] resolve_url: the only placeholder allowed is {token}",
        ),
        (
            {"health_code": {"type": "http", "url": "http://u/{id_number}",
                             "resolve_url": "ftp://u/{token}",
                             "mapping": {"colour": "c", "id_number": "i"}}},
            "[sources.health_code] resolve_url: must be an http:// or https:// URL",
        ),
        (
            {"health_code": {"type": "http", "url": "http://u/{id_number}",
                             "resolve_url": "http://u/{token}", "mapping": {"colour": "c"}}},
            "[sources.health_code.mapping] id_number: required",
        ),
        (
            {"health_code": {"type": "http", "url": "http://u/{id_number}",
                             "mapping": {"colour": "c", "id_number": "i"}}},
            "[sources.health_code.mapping] id_number: only allowed with resolve_url",
        ),
        (
            {"health_code": {"resolve_url": "http://u/{token}"}},
            '[sources.health_code] resolve_url: only allowed with type = "http"',
        ),
    ],
)  # fmt: skip
def test_resolve_url_config_is_validated(sources: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sources": sources}, "siheyi.toml")
    assert str(info.value).startswith(f"siheyi.toml: {message}"), str(info.value)


def test_resolve_url_env_expansion() -> None:
    config = parse_config(
        {
            "sources": {
                "health_code": {
                    "type": "http",
                    "url": "https://hc/{id_number}",
                    "resolve_url": "https://${HC_HOST}/t/{token}",
                    "mapping": {"colour": "c", "id_number": "i"},
                }
            }
        },
        "siheyi.toml",
        environ={"HC_HOST": "hc.example"},
    )
    http = config.source("health_code").http
    assert http is not None and http.resolve_url == "https://hc.example/t/{token}"
