"""The verifier decides within its deadline whatever the server does."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from device.config import VoiceConfig
from device.deciding.clock import ClockTrust
from device.deciding.verifier import Verifier
from device.link.client import ServerClient
from device.sources.credentials import Credential
from firmware_bridge.idcard import make_id_number

KEY = bytes(32)
ID = make_id_number("110101", "19900307", "451")
DEADLINE = 0.4


def cred(id_number: str = ID, **kw: Any) -> Credential:
    return Credential(kind="id_card", id_number=id_number, completed_at=time.monotonic(), **kw)


def answer_json(tap_id: str = "tap-1", **fields: Any) -> dict[str, Any]:
    """A complete ``POST /v1/verify`` answer: the kiosk refuses one that breaks the API."""
    return {
        "tap_id": tap_id,
        "outcome": "pass",
        "prompt": "",
        "masked_id": ID[:4] + "*" * 10 + ID[-4:],
        "site": "site-a",
        "reasons": [],
        "checks": {},
        "server_time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **fields,
    }


def verifier(url: str) -> Verifier:
    client = ServerClient(url, token="k-test.secret")
    clock = ClockTrust(ntp_synced=lambda: True)
    return Verifier(client, VoiceConfig().prompt, KEY, DEADLINE, clock=clock)


async def serve(handler: Callable[[web.Request], Any]) -> TestServer:
    app = web.Application()
    app.router.add_post("/v1/verify", handler)
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.fixture
async def calls() -> AsyncIterator[list[dict[str, Any]]]:
    yield []


async def test_online_answer_is_used(calls: list[dict[str, Any]]) -> None:
    async def ok(request: web.Request) -> web.Response:
        calls.append(await request.json())
        assert request.headers["Authorization"] == "Bearer k-test.secret"
        return web.json_response(answer_json(outcome="nat_expired", reasons=["nat_expired"]))

    server = await serve(ok)
    v = verifier(str(server.make_url("")))
    try:
        d = await v.decide(cred(), "tap-1")
    finally:
        await v._client.close()
        await server.close()
    assert (d.outcome, d.prompt, d.offline) == ("nat_expired", "你的核酸结果已超时", False)
    assert d.reasons == ("nat_expired",)
    assert calls == [{"tap_id": "tap-1", "credential": {"kind": "id_card", "id_number": ID}}]
    assert ID not in repr(d) and d.masked_id == ID[:4] + "*" * 10 + ID[-4:]


@pytest.mark.parametrize(
    "status,body",
    [
        (500, "{}"),
        (200, "not json"),
        (200, '{"outcome": "maybe"}'),
        (200, json.dumps(answer_json(outcome="maybe"))),
        (200, json.dumps(answer_json(reasons="nat_expired"))),
        (200, json.dumps(answer_json(checks={"nat": {"status": "ok"}}))),
    ],
)
async def test_bad_answers_decide_offline(status: int, body: str) -> None:
    async def bad(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type="application/json")

    server = await serve(bad)
    v = verifier(str(server.make_url("")))
    try:
        d = await v.decide(cred(), "tap-2")
    finally:
        await v._client.close()
        await server.close()
    assert (d.outcome, d.prompt, d.offline) == ("check", "非绿码请核查", True)
    assert d.error


async def test_black_holed_server_decides_at_deadline() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept, read nothing back, never answer

    hole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = hole.sockets[0].getsockname()[1]
    v = verifier(f"http://127.0.0.1:{port}")
    c = cred()
    try:
        d = await v.decide(c, "tap-3")
        elapsed = time.monotonic() - c.completed_at
    finally:
        await v._client.close()
        for w in accepted:
            w.close()
        hole.close()
        await hole.wait_closed()
    assert d.offline and d.outcome == "check"
    assert DEADLINE - 0.05 <= elapsed <= DEADLINE + 0.3


async def test_stopped_server_decides_offline_fast() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    v = verifier(f"http://127.0.0.1:{port}")
    c = cred()
    try:
        d = await v.decide(c, "tap-4")
    finally:
        await v._client.close()
    assert d.offline and d.outcome == "check" and "server_unavailable" in d.reasons
    assert time.monotonic() - c.completed_at < DEADLINE


async def test_bad_checksum_and_expired_card_decided_locally() -> None:
    v = verifier("http://127.0.0.1:9")  # never contacted
    try:
        bad = await v.decide(
            cred(ID[:17] + ("0" if ID[17] != "0" else "1"), checksum_ok=False), "t"
        )
        old = await v.decide(cred(valid_to="2019-01-01"), "t")
        long_term = Verifier(
            v._client,
            VoiceConfig().prompt,
            KEY,
            0.05,
            clock=ClockTrust(ntp_synced=lambda: True),
            wall=lambda: dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp(),
        )
        forever = await long_term.decide(cred(valid_to="长期"), "t")
    finally:
        await v._client.close()
    assert (bad.outcome, bad.reasons, bad.offline) == (
        "invalid_credential",
        ("bad_checksum",),
        False,
    )
    assert (old.outcome, old.reasons) == ("invalid_credential", ("card_expired",))
    assert old.prompt == "证件无效，请重新刷卡"
    assert forever.outcome == "check" and forever.offline  # not expired; server unreachable


async def test_a_revoked_kiosk_never_passes_from_its_cache(tmp_path: Path) -> None:
    """Cut off by the server, the kiosk must not keep opening the gate from cached passes."""
    from device.deciding.cache import KioskCache

    state = {"revoked": False}
    sampled = dt.datetime.now(dt.UTC).isoformat()

    async def answer(request: web.Request) -> web.Response:
        if state["revoked"]:
            return web.json_response({"error": "revoked", "detail": "device revoked"}, status=403)
        return web.json_response(
            answer_json(
                server_time=sampled,
                checks={
                    "health_code": {"status": "ok", "colour": "green", "updated_at": sampled},
                    "nat": {
                        "status": "ok",
                        "result": "negative",
                        "sampled_at": sampled,
                        "window_hours": 48,
                    },
                    "vaccination": {"status": "ok", "doses": 3, "min_doses": 0},
                    "travel": {"status": "ok", "flagged": False, "area": ""},
                },
            )
        )

    server = await serve(answer)
    cache = KioskCache(tmp_path / "cache.db", max_age_s=3600)
    v = verifier(str(server.make_url("")))
    v.cache = cache
    try:
        assert (await v.decide(cred(), "t1")).outcome == "pass"
        await v.flush()
        assert await cache.get(v._pseudonym_for(ID)) is not None  # the pass is cached
        state["revoked"] = True
        for i in range(5):
            d = await v.decide(cred(), f"t{i + 2}")
            assert d.outcome == "check" and not d.offline
            assert d.reasons == ("server_refused:revoked",)
        assert v.breaker.state == "closed"  # a refusal is not an outage
    finally:
        await v._client.close()
        await cache.close()
        await server.close()
