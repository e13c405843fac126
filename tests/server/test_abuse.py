"""Abuse of the API (issue 10, part 7): tap ids burnt by refused requests, device-id
enumeration through the session challenge, per-device in-flight limits and body timeouts."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioning.registry import DeviceBundle, add_device, revoke_device
from server.accounts.passwords import hash_password
from server.app import create_app
from server.config import LimitSettings, ServerConfig
from server.fleet.admin import create_admin
from server.storage.db import connect, transaction
from siheyi.cli import local_fleet

from .conftest import bearer
from .test_admin import PASSWORD, login


def tap(tap_id: str, **credential: Any) -> dict[str, Any]:
    return {"tap_id": tap_id, "credential": {"kind": "id_card", **credential}}


# -- replay memory holds decided taps only ----------------------------------------------


async def test_a_refused_body_does_not_burn_its_tap_id(
    client: TestClient, auth: dict[str, str]
) -> None:
    tap_id = f"t-{uuid.uuid4().hex[:12]}"
    bad = await client.post("/v1/verify", json=tap(tap_id, id_number="1" * 40), headers=auth)
    assert bad.status == 400
    missing = await client.post("/v1/verify", json={"tap_id": tap_id}, headers=auth)
    assert missing.status == 400
    good = tap(tap_id, id_number="11010519491231002X")
    retry = await client.post("/v1/verify", json=good, headers=auth)
    assert retry.status == 200, await retry.text()
    again = await client.post("/v1/verify", json=good, headers=auth)
    assert again.status == 409
    assert (await again.json())["error"] == "replay"


async def test_a_failed_decision_does_not_burn_its_tap_id(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.verify.service import Verifier

    real = Verifier.verify

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(Verifier, "verify", broken)
    request = tap("t-crash-1", id_number="11010519491231002X")
    assert (await client.post("/v1/verify", json=request, headers=auth)).status == 500
    monkeypatch.setattr(Verifier, "verify", real)
    assert (await client.post("/v1/verify", json=request, headers=auth)).status == 200


async def test_concurrent_copies_of_a_tap_decide_once(
    client: TestClient, auth: dict[str, str]
) -> None:
    request = tap("t-twins", id_number="11010519491231002X")
    answers = await asyncio.gather(
        *(client.post("/v1/verify", json=request, headers=auth) for _ in range(5))
    )
    assert sorted(a.status for a in answers) == [200, 409, 409, 409, 409]


# -- device ids cannot be enumerated -------------------------------------------------------


def _strip_nonce(raw: bytes, nonce: str) -> bytes:
    assert raw.count(nonce.encode()) == 1
    return raw.replace(nonce.encode(), b"<nonce>")


async def test_challenge_answers_alike_for_unknown_revoked_and_active_ids(
    client: TestClient,
    device: DeviceBundle,
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import UTC, datetime

    from server.fleet import sessions
    from server.storage.db import Database

    monkeypatch.setattr(sessions, "utc_now", lambda: datetime(2026, 11, 23, 8, tzinfo=UTC))
    fleet = local_fleet(None, db_path)
    revoked = add_device(fleet, "SN-REV", "site-a")
    revoke_device(fleet, revoked.serial)
    quarantined = add_device(fleet, "SN-Q", "site-a")
    from provisioning.registry import set_status

    set_status(fleet, quarantined.serial, "quarantined")
    calls = 0
    real_run = Database.run

    async def counting(self: Database, fn: Any, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real_run(self, fn, *args)

    monkeypatch.setattr(Database, "run", counting)
    answers: dict[str, tuple[int, dict[str, str], bytes, int]] = {}
    for name, device_id in (
        ("active", device.device_id),
        ("revoked", revoked.device_id),
        ("quarantined", quarantined.device_id),
        ("unknown", "k-00000000ff"),
    ):
        calls = 0
        resp = await client.post("/v1/session/challenge", json={"device_id": device_id})
        raw = await resp.read()
        headers = {k: v for k, v in resp.headers.items() if k not in ("Date",)}
        answers[name] = (
            resp.status,
            headers,
            _strip_nonce(raw, (await resp.json())["nonce"]),
            calls,
        )
    first = answers["active"]
    assert first[0] == 200
    for name, answer in answers.items():
        assert answer == first, name  # status, headers, body and database work all alike


async def _signed_session(client: TestClient, device_id: str, key: Ed25519PrivateKey) -> Any:
    import time

    from core.signing import session_message

    nonce = (
        await (await client.post("/v1/session/challenge", json={"device_id": device_id})).json()
    )["nonce"]
    now = int(time.time())
    signature = key.sign(session_message(device_id, nonce, now, "")).hex()
    body = {"device_id": device_id, "nonce": nonce, "time": now, "signature": signature}
    return await client.post("/v1/session", json=body)


async def test_session_tells_revoked_only_after_a_valid_signature(
    client: TestClient, device: DeviceBundle, db_path: Path
) -> None:
    fleet = local_fleet(None, db_path)
    revoked = add_device(fleet, "SN-REV", "site-a")
    revoke_device(fleet, revoked.serial)
    stranger = Ed25519PrivateKey.generate()
    refusals = []
    for device_id in (revoked.device_id, "k-00000000ff", device.device_id):
        resp = await _signed_session(client, device_id, stranger)
        refusals.append((resp.status, (await resp.json())["error"]))
    assert refusals == [(401, "bad_signature")] * 3
    own = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(revoked.private_key))
    resp = await _signed_session(client, revoked.device_id, own)
    assert (resp.status, (await resp.json())["error"]) == (403, "revoked")


# -- one kiosk cannot take every slot ------------------------------------------------------


@pytest.fixture
async def tight(aiohttp_client: Any, config: ServerConfig) -> TestClient:
    limits = msgspec.structs.replace(
        LimitSettings(), device_inflight=50, device_inflight_each=3, body_timeout_s=1.0
    )
    return await aiohttp_client(create_app(replace(config, limits=limits)))  # type: ignore[no-any-return]


async def _stalled_verify(client: TestClient, headers: dict[str, str]) -> Any:
    """A verify whose body never arrives (the Content-Length promises more)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: {headers['Authorization']}\r\n".encode()
        + b"Content-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    return reader, writer


async def test_a_kiosk_with_stalled_bodies_does_not_starve_the_others(
    tight: TestClient, device: DeviceBundle, db_path: Path
) -> None:
    greedy = bearer(db_path, device)
    other = bearer(db_path, add_device(local_fleet(None, db_path), "SN-0002", "site-a"))
    stalled = [await _stalled_verify(tight, greedy) for _ in range(10)]
    await asyncio.sleep(0.2)
    own = await tight.post(
        "/v1/verify", json=tap("t-own", id_number="11010519491231002X"), headers=greedy
    )
    assert own.status == 429  # its own slots are taken
    answer = await tight.post(
        "/v1/verify", json=tap("t-other", id_number="11010519491231002X"), headers=other
    )
    assert answer.status == 200
    # the stalled requests end with 408 within the body timeout
    statuses = []
    for reader, writer in stalled:
        line = await asyncio.wait_for(reader.readline(), 10)
        statuses.append(line.split()[1] if line else b"closed")
        writer.close()
    assert statuses.count(b"408") == 3 and set(statuses) <= {b"408", b"429"}
    later = await tight.post(
        "/v1/verify", json=tap("t-later", id_number="11010519491231002X"), headers=greedy
    )
    assert later.status == 200


# -- bulk admin bodies up to the documented maximum -------------------------------------


async def test_bulk_registration_at_the_documented_maximum(
    aiohttp_client: Any, config: ServerConfig, db_path: Path
) -> None:
    """100,000 devices in one body just under 16 MiB (a partial ``content.read(n)`` once
    refused anything beyond the first chunks as "not valid JSON")."""
    from core.wire_admin import MAX_BULK_DEVICES
    from server.fleet.admin import MAX_BULK_BYTES

    client = await aiohttp_client(create_app(config))
    with connect(db_path) as conn, transaction(conn):
        create_admin(conn, "ops", hash_password(PASSWORD), "2026-01-01T00:00:00+00:00")
        conn.execute("INSERT INTO sites (site) VALUES ('north')")
    headers = await login(client)
    rows = [
        {"serial": f"SN-{i:06d}", "site": "north", "location": ""} for i in range(MAX_BULK_DEVICES)
    ]
    bare = len(json.dumps({"devices": rows}).encode())
    pad = (MAX_BULK_BYTES - 64 - bare) // MAX_BULK_DEVICES
    for row in rows:
        row["location"] = "x" * pad
    raw = json.dumps({"devices": rows}).encode()
    assert MAX_BULK_BYTES - 2 * MAX_BULK_DEVICES < len(raw) <= MAX_BULK_BYTES
    resp = await client.post("/v1/admin/devices", data=io.BytesIO(raw), headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["created"] == MAX_BULK_DEVICES
    over = raw[:-1] + b" " * (MAX_BULK_BYTES + 1 - len(raw)) + b"}"
    resp = await client.post("/v1/admin/devices", data=io.BytesIO(over), headers=headers)
    assert resp.status == 413
