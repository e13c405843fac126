"""Several server processes on one database (issue 11, part 3): what one process learns,
the other knows — pass nonces, session nonces, revocation, admin login backoff, live events.

Each test runs two real ``kiosk server run`` processes on different ports sharing one
database (a SQLite file in WAL mode, or PostgreSQL), so every request is sent to a chosen
process; ``--workers 2`` itself (SO_REUSEPORT, a supervisor) is tested at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.signing import session_message
from provisioning.registry import DeviceBundle
from server.accounts.passwords import hash_password
from server.config import LimitSettings
from server.fleet.admin import create_admin
from server.fleet.sessions import mint_token
from server.http.workers import per_worker_limits
from server.storage.db import connect, transaction

from .multiproc import children, servers, start, stop, wait_ready

PASSWORD = "correct horse battery"
#: A revocation must be seen by the other process within [identity] status_sync_s (1 s);
#: this only bounds the wait of a test that fails.
SEEN_WITHIN_S = 10.0


@pytest.fixture
def fleet_db(db_path: Path | str, device: DeviceBundle) -> Path | str:
    """The shared database: a device and an administrator."""
    with connect(db_path) as conn, transaction(conn):
        create_admin(conn, "ops", hash_password(PASSWORD), "2026-01-01T00:00:00+00:00")
    return db_path


def device_auth(db: Path | str, device: DeviceBundle) -> dict[str, str]:
    with connect(db) as conn:
        return {"Authorization": f"Bearer {mint_token(conn, device.device_id)}"}


async def post(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    async with http.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def admin_login(http: aiohttp.ClientSession, url: str) -> dict[str, str]:
    status, body = await post(
        http, url + "/v1/admin/login", {"username": "ops", "password": PASSWORD}, {}
    )
    assert status == 200, body
    return {"Authorization": f"Bearer {body['token']}"}


async def test_a_pass_claimed_through_one_process_is_refused_through_the_other(
    fleet_db: Path | str, device: DeviceBundle, tmp_path: Path
) -> None:
    auth = device_auth(fleet_db, device)
    claim = {"nonce": "0123456789abcdef", "expires_at": int(time.time()) + 300}
    with servers(fleet_db, tmp_path, 2) as (a, b):
        await asyncio.gather(wait_ready(a), wait_ready(b))
        async with aiohttp.ClientSession() as http:
            first = await post(http, a.url + "/v1/passes/claim", claim, auth)
            again = await post(http, b.url + "/v1/passes/claim", claim, auth)
            other = {**claim, "nonce": "fedcba9876543210"}
            fresh = await post(http, b.url + "/v1/passes/claim", other, auth)
    assert first[0] == 200 and first[1]["nonce"] == claim["nonce"]
    assert again == (409, {"error": "replay", "detail": "this pass was already used"})
    assert fresh[0] == 200


async def test_a_session_nonce_used_at_one_process_is_refused_at_the_other(
    fleet_db: Path | str, device: DeviceBundle, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(device.private_key))
    with servers(fleet_db, tmp_path, 2) as (a, b):
        await asyncio.gather(wait_ready(a), wait_ready(b))
        async with aiohttp.ClientSession() as http:
            status, challenge = await post(
                http, b.url + "/v1/session/challenge", {"device_id": device.device_id}, {}
            )
            assert status == 200
            now = int(time.time())
            message = session_message(device.device_id, challenge["nonce"], now, "")
            body = {
                "device_id": device.device_id,
                "nonce": challenge["nonce"],
                "time": now,
                "signature": key.sign(message).hex(),
            }
            first = await post(http, a.url + "/v1/session", body, {})
            replay = await post(http, b.url + "/v1/session", body, {})
    assert first[0] == 200 and first[1]["token"]  # a nonce issued by B is good at A
    assert replay[0] == 409 and replay[1]["error"] == "replay"


async def test_a_revocation_through_one_process_is_seen_by_the_other(
    fleet_db: Path | str, device: DeviceBundle, tmp_path: Path
) -> None:
    auth = device_auth(fleet_db, device)
    beat = {"boot_id": "b"}
    with servers(fleet_db, tmp_path, 2) as (a, b):
        await asyncio.gather(wait_ready(a), wait_ready(b))
        async with aiohttp.ClientSession() as http:
            before = await post(http, b.url + "/v1/heartbeat", beat, auth)
            assert before[0] == 200, before  # B has the device cached as active
            admin = await admin_login(http, a.url)
            revoked = await post(
                http, f"{a.url}/v1/admin/devices/{device.serial}/revoke", {}, admin
            )
            assert revoked[0] == 200, revoked
            deadline = time.monotonic() + SEEN_WITHIN_S
            while True:
                status, body = await post(http, b.url + "/v1/heartbeat", beat, auth)
                if status != 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
    assert (status, body.get("error")) == (403, "revoked")


async def test_login_failures_at_one_process_count_at_the_other(
    fleet_db: Path | str, tmp_path: Path
) -> None:
    """3 wrong passwords per account and source block it (login_free_failures): two at A
    and one at B are three, so A refuses the next attempt before checking it."""
    wrong = {"username": "ops", "password": "guess"}
    with servers(fleet_db, tmp_path, 2) as (a, b):
        await asyncio.gather(wait_ready(a), wait_ready(b))
        async with aiohttp.ClientSession() as http:
            statuses = [
                (await post(http, url + "/v1/admin/login", wrong, {}))[0]
                for url in (a.url, a.url, b.url)
            ]
            blocked = await post(http, a.url + "/v1/admin/login", wrong, {})
    assert statuses == [401, 401, 401]
    assert blocked[0] == 429 and blocked[1]["error"] == "overloaded"


async def read_events(resp: aiohttp.ClientResponse, want: str, timeout_s: float) -> dict[str, Any]:
    """The first event of kind ``want`` on a server-sent event stream."""
    async with asyncio.timeout(timeout_s):
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                event: dict[str, Any] = json.loads(line[6:])
                if event["kind"] == want:
                    return event
    raise AssertionError("the stream ended")


@pytest.mark.parametrize("any_database", ["postgresql"], indirect=True)
async def test_an_event_published_by_one_process_reaches_a_subscriber_of_the_other(
    fleet_db: Path | str, device: DeviceBundle, tmp_path: Path
) -> None:
    auth = device_auth(fleet_db, device)
    with servers(fleet_db, tmp_path, 2) as (a, b):
        await asyncio.gather(wait_ready(a), wait_ready(b))
        async with aiohttp.ClientSession() as http:
            admin = await admin_login(http, b.url)
            async with http.get(b.url + "/v1/admin/events", headers=admin) as stream:
                assert stream.status == 200
                assert (await stream.content.readline()).startswith(b": stream open")
                await asyncio.sleep(0.5)  # B's LISTEN is in force before A publishes
                beat = await post(http, a.url + "/v1/heartbeat", {"boot_id": "b"}, auth)
                assert beat[0] == 200
                event = await read_events(stream, "kiosk_up", 10.0)
    assert event["data"]["device_id"] == device.device_id
    assert event["data"]["site"] == device.site


async def test_workers_share_one_port_restart_a_crashed_worker_and_stop_on_sigterm(
    fleet_db: Path | str, device: DeviceBundle, tmp_path: Path
) -> None:
    auth = device_auth(fleet_db, device)
    server = start(fleet_db, tmp_path, "--workers", "2")
    try:
        await wait_ready(server)
        workers = children(server.process.pid)
        assert len(workers) == 2, server.output()
        nonce = {"nonce": "00000000000000aa", "expires_at": int(time.time()) + 300}
        statuses = []
        for _ in range(8):  # fresh connections: the kernel spreads them over both workers
            async with aiohttp.ClientSession() as http:
                statuses.append((await post(http, server.url + "/v1/passes/claim", nonce, auth))[0])
        assert sorted(statuses) == [200] + [409] * 7
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + SEEN_WITHIN_S
        while len(children(server.process.pid) - {victim}) < 2:
            assert time.monotonic() < deadline, server.output()
            await asyncio.sleep(0.1)
        await wait_ready(server)
    finally:
        code = stop(server)
    assert code == 0, server.output()
    assert not children(server.process.pid)
    assert "worker 0 died" in server.output() or "worker 1 died" in server.output()


def test_the_configured_bucket_rates_are_the_servers_total() -> None:
    limits = LimitSettings(session_per_s=500, session_burst=1000, enrol_per_s=20, login_per_s=2)
    assert per_worker_limits(limits, 1) is limits
    each = per_worker_limits(limits, 4)
    assert (each.session_per_s, each.session_burst, each.enrol_per_s, each.login_per_s) == (
        125,
        250,
        5,
        0.5,
    )
    assert each.device_inflight == limits.device_inflight  # each process's own memory


def test_a_port_held_by_another_program_is_an_error_not_a_restart_loop(
    db_path: Path | str, tmp_path: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = start(db_path, tmp_path, "--host", "127.0.0.1", "--workers", "2", port=port)
        code = server.process.wait(timeout=60)
    assert code == 2
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in server.output()
    assert "worker 0 started" not in server.output()


async def test_workers_do_not_outlive_a_killed_supervisor(
    db_path: Path | str, tmp_path: Path
) -> None:
    server = start(db_path, tmp_path, "--workers", "2")
    try:
        await wait_ready(server)
        workers = children(server.process.pid)
        assert len(workers) == 2
        server.process.kill()  # SIGKILL: nothing is forwarded
        server.process.wait()
        deadline = time.monotonic() + SEEN_WITHIN_S
        while any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, f"workers left running:\n{server.output()}"
            await asyncio.sleep(0.1)
    finally:
        for pid in children(server.process.pid):
            os.kill(pid, signal.SIGKILL)
