"""The kiosk's ServerClient against the real server: sessions, recovery, rotation, config.

Every request body and header the server receives is recorded, so the tests can assert that no
private key ever travels; logs are captured for the same check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

import server.fleet.sessions
from device.config import load_bundle
from device.errors import ServerRejected, ServerUnavailable
from device.link.client import ServerClient, jittered
from device.link.identity import PENDING_SUFFIX, DeviceIdentity
from device.recording.journal import Journal
from device.recording.uploader import Uploader
from provisioning import registry
from provisioning.registry import add_device
from server.app import create_app
from server.config import ServerConfig
from server.fleet.sessions import utc_now
from server.storage.db import connect, transaction
from siheyi.cli import local_fleet

ID = "11010519491231002X"


@dataclass
class Rig:
    db: Path
    url: str
    tmp: Path
    seen: list[str] = field(default_factory=list)  # every request: path, headers and body

    def kiosk(self, serial: str, **kwargs: Any) -> tuple[Path, ServerClient]:
        path = self.tmp / f"{serial}.json"
        add_device(
            local_fleet(None, self.db), serial, "site-a", server_url=self.url, bundle_path=path
        )
        return path, self.client(path, **kwargs)

    def client(self, path: Path, **kwargs: Any) -> ServerClient:
        bundle = load_bundle(path)
        identity = DeviceIdentity.from_bundle(bundle.device_id, bundle.private_key, path)
        return ServerClient(self.url, identity, **kwargs)

    def paths(self) -> list[str]:
        return [s.split(" ", 1)[0] for s in self.seen]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    db = tmp_path / "server.db"
    app = create_app(ServerConfig.default(database=db))
    holder = Rig(db, "", tmp_path)

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        holder.seen.append(f"{request.path} {dict(request.headers)} {raw.decode(errors='replace')}")
        return await handler(request)

    app.middlewares.append(record)
    test_server = TestServer(app)
    await test_server.start_server()
    holder.url = str(test_server.make_url("")).rstrip("/")
    try:
        yield holder
    finally:
        await test_server.close()


async def verify(client: ServerClient) -> dict[str, Any]:
    return await client.verify(f"t-{uuid.uuid4().hex}", "id_card", ID, 5.0)


def travel(monkeypatch: pytest.MonkeyPatch, days: float) -> None:
    """Move the server's identity clock ``days`` ahead."""
    monkeypatch.setattr(server.fleet.sessions, "utc_now", lambda: utc_now() + timedelta(days=days))


async def test_session_is_obtained_once_and_reused(rig: Rig) -> None:
    _, client = rig.kiosk("SN-1")
    async with client:
        assert (await verify(client))["outcome"] == "check"
        await verify(client)
        await client.heartbeat({"boot_id": "b"})
    assert rig.paths() == [
        "/v1/session/challenge",
        "/v1/session",
        "/v1/verify",
        "/v1/verify",
        "/v1/heartbeat",
    ]


async def test_expired_token_recovery_after_weeks_offline(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    days = [0.0]
    _, client = rig.kiosk("SN-1", wall_clock=lambda: time.time() + days[0] * 86400)
    async with client:
        await verify(client)  # first session
        token = client._token
        days[0] = 31.0  # weeks later, on both clocks
        travel(monkeypatch, 31)
        client._token_expires = time.monotonic() + 3600  # the kiosk slept: it still trusts it
        assert (await verify(client))["outcome"] == "check"
        assert client._token != token
    assert rig.paths().count("/v1/session") == 2


async def test_kiosk_clock_off_by_weeks_is_tolerated_and_reported(rig: Rig) -> None:
    _, client = rig.kiosk("SN-1", wall_clock=lambda: time.time() - 40 * 86400)
    async with client:
        await verify(client)
        assert client.clock_skew_s is not None and client.clock_skew_s > 39 * 86400
        await client.heartbeat({"boot_id": "b"})  # sent_at: the kiosk's own clock
    assert rig.paths()[:4] == [
        "/v1/session/challenge",
        "/v1/session",  # 401 clock_skew with the server's time
        "/v1/session/challenge",
        "/v1/session",
    ]
    with connect(rig.db) as conn:
        [(skew,)] = conn.execute("SELECT clock_skew_s FROM devices").fetchall()
    assert skew > 39 * 86400  # what `kiosk provision status` shows


async def test_small_skew_is_reported(rig: Rig) -> None:
    _, client = rig.kiosk("SN-1", wall_clock=lambda: time.time() - 100)
    async with client:
        await verify(client)
        assert client.clock_skew_s is not None and 95 < client.clock_skew_s < 110
        answer = await client.heartbeat({"boot_id": "b"})
        assert 95 < answer["clock_skew_s"] < 110


async def test_revoke_and_quarantine_refuse_the_next_request(rig: Rig) -> None:
    _, client = rig.kiosk("SN-1")
    _, other = rig.kiosk("SN-2")
    async with client, other:
        await verify(client)
        await verify(other)
        registry.revoke_device(local_fleet(None, rig.db), "SN-1")
        registry.set_status(local_fleet(None, rig.db), "SN-2", "quarantined")
        await asyncio.sleep(
            1.05
        )  # another process (the CLI) changed them: seen within status_sync_s
        with pytest.raises(ServerRejected) as revoked:
            await verify(client)
        assert (revoked.value.status, revoked.value.error) == (403, "revoked")
        with pytest.raises(ServerRejected) as quarantined:
            await verify(other)
        assert quarantined.value.error == "quarantined"
        registry.set_status(local_fleet(None, rig.db), "SN-2", "active")
        await asyncio.sleep(1.05)
        await verify(other)


async def test_admin_rotation_is_carried_out_by_the_client(rig: Rig) -> None:
    path, client = rig.kiosk("SN-1")
    old = load_bundle(path)
    async with client:
        await verify(client)
        registry.request_rotation(local_fleet(None, rig.db), "SN-1")
        await asyncio.sleep(1.05)
        await verify(client)  # 401 → new session → 403 rotation_required → new key → OK
    new = load_bundle(path)
    assert new.private_key != old.private_key and new.public_key != old.public_key
    assert not path.with_name(path.name + PENDING_SUFFIX).exists()
    with connect(rig.db) as conn:
        [(stored, pending)] = conn.execute("SELECT public_key, rotate_pending FROM devices")
    assert (stored, pending) == (new.public_key, 0)
    stale = ServerClient(rig.url, DeviceIdentity.from_bundle(old.device_id, old.private_key, None))
    async with stale:
        with pytest.raises(ServerRejected) as err:
            await verify(stale)
    assert err.value.error == "bad_signature"


async def test_kiosk_initiated_rotation(rig: Rig) -> None:
    path, client = rig.kiosk("SN-1")
    before = load_bundle(path).public_key
    async with client:
        await verify(client)
        public = await client.rotate_key()
        await verify(client)
    assert public == load_bundle(path).public_key != before


async def test_rotation_survives_a_crash_before_the_bundle_was_updated(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, client = rig.kiosk("SN-1")
    old = load_bundle(path)

    def crash(self: DeviceIdentity) -> None:
        raise KeyboardInterrupt  # power cut between the server's answer and the bundle write

    async with client:
        monkeypatch.setattr(DeviceIdentity, "commit_rotation", crash)
        with pytest.raises(KeyboardInterrupt):
            await client.rotate_key()
        monkeypatch.undo()
    assert load_bundle(path).private_key == old.private_key  # bundle untouched
    assert path.with_name(path.name + PENDING_SUFFIX).exists()
    async with rig.client(path) as rebooted:  # old key refused → pending key promoted
        await verify(rebooted)
    assert load_bundle(path).private_key != old.private_key


async def test_config_is_picked_up_at_heartbeat(rig: Rig) -> None:
    from server.fleet import registry as fleet

    _, client = rig.kiosk("SN-1")
    seen: list[tuple[int, dict[str, Any]]] = []
    client.on_config = lambda version, config: seen.append((version, config))
    with connect(rig.db) as conn, transaction(conn):
        fleet.set_config(conn, "fleet", "", "verify.deadline_s", 1.0)
        fleet.set_config(conn, "fleet", "", "upload.interval_s", 5)
        fleet.set_config(conn, "site", "site-a", "upload.interval_s", 3)
        fleet.set_config(conn, "device", "SN-1", "verify.deadline_s", 0.8)
    async with client:
        answer = await client.heartbeat({"boot_id": "b", "version": "1.2.3"})
        assert answer["config_version"] == 4
        assert client.config == {"verify.deadline_s": 0.8, "upload.interval_s": 3}
        await client.heartbeat({"boot_id": "b"})
    assert seen == [(4, {"verify.deadline_s": 0.8, "upload.interval_s": 3})]  # announced once
    [status] = registry.status_rows(registry.list_devices(local_fleet(None, rig.db)), 120)
    assert status["online"] and status["version"] is None  # the last heartbeat had none


async def test_overload_is_honoured_with_retry_after() -> None:
    hits = 0

    async def busy(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response(
            {"error": "overloaded", "detail": "x"}, status=429, headers={"Retry-After": "7"}
        )

    app = web.Application()
    app.router.add_post("/v1/heartbeat", busy)
    test_server = TestServer(app)
    await test_server.start_server()
    try:
        async with ServerClient(str(test_server.make_url("")), token="t") as client:
            with pytest.raises(ServerUnavailable) as first:
                await client.heartbeat({"boot_id": "b"})
            assert first.value.retry_after is not None and 7 <= first.value.retry_after <= 10.5
            with pytest.raises(ServerUnavailable) as second:
                await client.heartbeat({"boot_id": "b"})  # fails fast, no request
            assert second.value.retry_after is not None and second.value.retry_after > 6
            assert client.retry_after > 6
    finally:
        await test_server.close()
    assert hits == 1


async def test_a_busy_download_says_when_to_retry_but_holds_nothing_else_back() -> None:
    """A streamed download (a release, a voice pack) answered 429 carries Retry-After in its
    error; the download slots being full must not stop the kiosk's taps and heartbeats."""
    hits = 0

    async def busy(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(status=429, headers={"Retry-After": "9"})

    async def sink(chunk: bytes) -> None:
        raise AssertionError("no body of a refused download reaches the sink")

    app = web.Application()
    app.router.add_get("/v1/device/voice-packs/{sha}/pack", busy)
    test_server = TestServer(app)
    await test_server.start_server()
    try:
        async with ServerClient(str(test_server.make_url("")), token="t") as client:
            url = "/v1/device/voice-packs/ab/pack"
            with pytest.raises(ServerUnavailable) as first:
                await client.fetch_chunks(url, sink, timeout_s=5)
            assert first.value.retry_after is not None and 9 <= first.value.retry_after <= 13.5
            assert client.retry_after == 0
            with pytest.raises(ServerUnavailable):
                await client.fetch_chunks(url, sink, timeout_s=5)
    finally:
        await test_server.close()
    assert hits == 2


def test_jittered_spreads_timers() -> None:
    values = {round(jittered(30.0), 3) for _ in range(200)}
    assert len(values) > 100
    assert all(27.0 <= v <= 33.0 for v in values)


async def test_no_private_key_is_sent_or_logged(
    rig: Rig, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from device.link.enrol import enrol
    from server.fleet.registry import DeviceRow, upsert_devices

    caplog.set_level(logging.DEBUG)
    path, client = rig.kiosk("SN-1")
    keys = {load_bundle(path).private_key}
    async with client:
        await verify(client)
        await client.heartbeat({"boot_id": "b"})
        await client.rotate_key()
        keys.add(load_bundle(path).private_key)
        registry.request_rotation(local_fleet(None, rig.db), "SN-1")
        await asyncio.sleep(1.05)
        await verify(client)
        keys.add(load_bundle(path).private_key)
    with connect(rig.db) as conn, transaction(conn):
        upsert_devices(conn, [(1, DeviceRow("SN-2", "site-a"))])
    code, _ = registry.issue_enrol_code(local_fleet(None, rig.db), "SN-2")
    enrolled = await enrol(rig.url, "SN-2", code, tmp_path / "kiosk2")
    keys.add(load_bundle(enrolled).private_key)
    assert len(keys) == 4
    traffic = "\n".join(rig.seen)
    assert "/v1/enrol" in traffic and "/v1/session" in traffic
    with connect(rig.db) as conn:
        dump = "\n".join(conn.iterdump())
    for key in keys:
        assert key not in traffic
        assert key not in caplog.text
        assert key not in dump
        assert key not in repr(load_bundle(enrolled))
    assert json.loads(enrolled.read_text())["private_key"] in keys


def flagged_on_server(db: Path) -> list[tuple[int, str | None]]:
    with connect(db) as conn:
        return conn.execute("SELECT seq, flagged FROM audit_events ORDER BY seq").fetchall()


async def test_a_revoked_kiosk_uploads_on_an_audit_only_token(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10, part 2: its token expired after revocation, the kiosk is refused a session
    (and learns why) but the refusal's audit-only token still takes its journal."""
    hours = [0.0]
    path, client = rig.kiosk("SN-1", wall_clock=lambda: time.time() + hours[0] * 3600)
    device_id = load_bundle(path).device_id
    async with client, Journal(tmp_path / "j.db", device_id, "boot") as journal:
        await verify(client)
        for i in range(3):
            await journal.append(
                {"kind": "decision", "outcome": "check", "clock_trusted": True, "detail": {"i": i}}
            )
        assert await Uploader(journal, client).drain_once() == 3
        registry.revoke_device(local_fleet(None, rig.db), "SN-1")
        hours[0] = 3.0  # three hours later, on both clocks: the session token has expired
        travel(monkeypatch, 0.125)
        for i in range(2):
            await journal.append(
                {"kind": "decision", "outcome": "check", "clock_trusted": True, "detail": {"i": i}}
            )
        rig.seen.clear()
        caplog.set_level(logging.INFO, "device.link.client")
        assert await Uploader(journal, client).drain_once() == 2
        assert "session refused (session_expired)" in caplog.text  # before the rig sees it
        assert rig.paths() == [
            "/v1/session/challenge",
            "/v1/session",  # 403 revoked, with the audit-only token
            "/v1/audit",
        ]
        for call in (verify(client), client.heartbeat({"boot_id": "b"})):
            with pytest.raises(ServerRejected) as refused:
                await call
            assert (refused.value.status, refused.value.error) == (403, "revoked")
        await journal.append(
            {"kind": "decision", "outcome": "check", "clock_trusted": True, "detail": {"i": 9}}
        )
        rig.seen.clear()
        assert await Uploader(journal, client).drain_once() == 1
        assert rig.paths() == ["/v1/audit"]  # the audit-only token is reused
    assert flagged_on_server(rig.db) == [(1, None), (2, None), (3, None)] + [
        (seq, "revoked") for seq in (4, 5, 6)
    ]


async def test_a_released_kiosk_gets_a_full_session_again(rig: Rig, tmp_path: Path) -> None:
    path, client = rig.kiosk("SN-1")
    device_id = load_bundle(path).device_id
    async with client, Journal(tmp_path / "j.db", device_id, "boot") as journal:
        registry.set_status(local_fleet(None, rig.db), "SN-1", "quarantined")
        with pytest.raises(ServerRejected) as refused:
            await verify(client)
        assert refused.value.error == "quarantined"
        await journal.append(
            {"kind": "decision", "outcome": "check", "clock_trusted": True, "detail": {}}
        )
        assert await Uploader(journal, client).drain_once() == 1
        registry.set_status(local_fleet(None, rig.db), "SN-1", "active")
        await asyncio.sleep(1.05)  # changed by another process: seen within status_sync_s
        assert (await verify(client))["outcome"] == "check"
        assert client._token is not None and client._token.startswith("s1.")
        assert client._audit_token is None
    assert flagged_on_server(rig.db) == [(1, "quarantined")]
