"""A revoked or quarantined kiosk still hands in what it saw (issue 10, part 2).

``POST /v1/session`` tells such a kiosk its status (``403 revoked`` / ``403 quarantined``, only
after a valid signature) and hands it an audit-only token with the refusal: ``POST /v1/audit``
takes it (the events are stored flagged), every other route stays ``403``.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core import wire
from core.signing import session_message
from provisioning.registry import DeviceBundle, add_device, revoke_device, set_status
from server.app import create_app
from server.config import IdentitySettings, ServerConfig
from server.fleet import sessions
from server.storage.db import connect
from siheyi.cli import local_fleet

from .test_audit import chain

ID = "11010519491231002X"
REAL_NOW = sessions.utc_now


@pytest.fixture
async def fresh(aiohttp_client: Any, config: ServerConfig, device: DeviceBundle) -> TestClient:
    """The app reading the device row on every request (no status cache to wait for)."""
    app = create_app(replace(config, identity=IdentitySettings(status_sync_s=0)))
    return await aiohttp_client(app)  # type: ignore[no-any-return]


def own_key(bundle: DeviceBundle) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(bundle.private_key))


async def sign_in(client: TestClient, device_id: str, key: Ed25519PrivateKey) -> Any:
    """Challenge and signed session, on the server's (possibly travelled) clock."""
    resp = await client.post("/v1/session/challenge", json={"device_id": device_id})
    nonce = (await resp.json())["nonce"]
    now = int(sessions.utc_now().timestamp())
    signature = key.sign(session_message(device_id, nonce, now, "")).hex()
    body = {"device_id": device_id, "nonce": nonce, "time": now, "signature": signature}
    return await client.post("/v1/session", json=body)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def travel(monkeypatch: pytest.MonkeyPatch, hours: float) -> None:
    monkeypatch.setattr(sessions, "utc_now", lambda: REAL_NOW() + timedelta(hours=hours))


async def refused_everywhere_else(client: TestClient, token: str, status: str) -> None:
    verify = {"tap_id": f"t-{uuid.uuid4().hex}", "credential": {"kind": "id_card", "id_number": ID}}
    for method, path, body in (
        ("POST", "/v1/verify", verify),
        ("POST", "/v1/heartbeat", {"boot_id": "b"}),
        ("GET", "/v1/snapshot", None),
    ):
        resp = await client.request(method, path, json=body, headers=bearer(token))
        assert (resp.status, (await resp.json())["error"]) == (403, status), path


def flagged(db_path: Path, device_id: str) -> list[tuple[int, str | None]]:
    with connect(db_path) as conn:
        return conn.execute(
            "SELECT seq, flagged FROM audit_events WHERE device_id = ? ORDER BY seq", (device_id,)
        ).fetchall()


async def test_revoked_kiosk_with_an_expired_token_still_uploads_flagged(
    fresh: TestClient, device: DeviceBundle, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resp = await sign_in(fresh, device.device_id, own_key(device))
    assert resp.status == 200
    token = (await resp.json())["token"]
    events = chain(1, 5)
    resp = await fresh.post("/v1/audit", json={"events": events[:2]}, headers=bearer(token))
    assert resp.status == 200
    revoke_device(local_fleet(None, db_path), device.serial)
    travel(monkeypatch, 2)  # the session token expired meanwhile
    resp = await fresh.post("/v1/audit", json={"events": events[2:]}, headers=bearer(token))
    assert (resp.status, (await resp.json())["error"]) == (401, "session_expired")

    resp = await sign_in(fresh, device.device_id, own_key(device))
    assert resp.status == 403
    refusal = msgspec.convert(await resp.json(), wire.StatusRefusal)
    assert refusal.error == "revoked" and refusal.expires_in > 0
    assert refusal.audit_token.startswith("a1.")

    resp = await fresh.post(
        "/v1/audit", json={"events": events[2:]}, headers=bearer(refusal.audit_token)
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["acked_seq"] == 5
    assert flagged(db_path, device.device_id) == [
        (1, None),
        (2, None),
        (3, "revoked"),
        (4, "revoked"),
        (5, "revoked"),
    ]
    await refused_everywhere_else(fresh, refusal.audit_token, "revoked")


async def test_quarantine_gets_an_audit_token_that_release_does_not_promote(
    fresh: TestClient, device: DeviceBundle, db_path: Path
) -> None:
    set_status(local_fleet(None, db_path), device.serial, "quarantined")
    resp = await sign_in(fresh, device.device_id, own_key(device))
    body = await resp.json()
    assert (resp.status, body["error"]) == (403, "quarantined")
    token = body["audit_token"]
    await refused_everywhere_else(fresh, token, "quarantined")
    resp = await fresh.post("/v1/audit", json={"events": chain(1, 1)}, headers=bearer(token))
    assert resp.status == 200
    assert flagged(db_path, device.device_id) == [(1, "quarantined")]

    set_status(local_fleet(None, db_path), device.serial, "active")
    resp = await fresh.post(
        "/v1/verify", json={"tap_id": "t-1", "credential": {}}, headers=bearer(token)
    )
    assert (resp.status, (await resp.json())["error"]) == (401, "session_expired")
    resp = await fresh.post("/v1/audit", json={"events": chain(1, 2)}, headers=bearer(token))
    assert resp.status == 200  # still good for the audit until it expires
    resp = await sign_in(fresh, device.device_id, own_key(device))
    assert resp.status == 200 and (await resp.json())["token"].startswith("s1.")


async def test_the_audit_token_cannot_be_widened_or_outlive_its_expiry(
    fresh: TestClient, device: DeviceBundle, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    revoke_device(local_fleet(None, db_path), device.serial)
    token = (await (await sign_in(fresh, device.device_id, own_key(device))).json())["audit_token"]
    widened = "s1." + token.split(".", 1)[1]
    resp = await fresh.post("/v1/audit", json={"events": chain(1, 1)}, headers=bearer(widened))
    assert (resp.status, (await resp.json())["error"]) == (401, "unauthenticated")
    travel(monkeypatch, 1)
    resp = await fresh.post("/v1/audit", json={"events": chain(1, 1)}, headers=bearer(token))
    assert (resp.status, (await resp.json())["error"]) == (401, "session_expired")


async def test_a_nonce_gives_one_audit_token(
    fresh: TestClient, device: DeviceBundle, db_path: Path
) -> None:
    revoke_device(local_fleet(None, db_path), device.serial)
    resp = await fresh.post("/v1/session/challenge", json={"device_id": device.device_id})
    nonce = (await resp.json())["nonce"]
    now = int(sessions.utc_now().timestamp())
    signature = own_key(device).sign(session_message(device.device_id, nonce, now, "")).hex()
    body = {"device_id": device.device_id, "nonce": nonce, "time": now, "signature": signature}
    first = await fresh.post("/v1/session", json=body)
    again = await fresh.post("/v1/session", json=body)
    assert first.status == 403
    assert (again.status, (await again.json())["error"]) == (409, "replay")


async def test_no_status_and_no_token_before_a_valid_signature(
    fresh: TestClient, device: DeviceBundle, db_path: Path
) -> None:
    fleet = local_fleet(None, db_path)
    revoked = add_device(fleet, "SN-REV", "site-a")
    revoke_device(fleet, revoked.serial)
    keyless = add_device(fleet, "SN-NOKEY", "site-a")
    revoke_device(fleet, keyless.serial)
    with connect(db_path) as conn:
        conn.execute(
            "UPDATE devices SET public_key = NULL WHERE device_id = ?", (keyless.device_id,)
        )
    stranger = Ed25519PrivateKey.generate()
    answers = []
    for device_id, key in (
        (revoked.device_id, stranger),  # revoked, wrong key
        (keyless.device_id, own_key(keyless)),  # revoked, no key registered
        ("k-00000000ff", stranger),  # unknown
        (device.device_id, stranger),  # active, wrong key
    ):
        resp = await sign_in(fresh, device_id, key)
        answers.append((resp.status, await resp.read()))
    assert answers == [answers[-1]] * 4
    assert answers[0][0] == 401 and b"audit_token" not in answers[0][1]


async def test_an_active_kiosk_is_unchanged(fresh: TestClient, device: DeviceBundle) -> None:
    resp = await sign_in(fresh, device.device_id, own_key(device))
    assert resp.status == 200
    answer = msgspec.convert(await resp.json(), wire.SessionAnswer)
    assert answer.token.startswith("s1.") and not answer.rotated
    verify = {"tap_id": "t-1", "credential": {"kind": "id_card", "id_number": ID}}
    resp = await fresh.post("/v1/verify", json=verify, headers=bearer(answer.token))
    assert resp.status == 200
    resp = await fresh.post("/v1/audit", json={"events": chain(1, 1)}, headers=bearer(answer.token))
    assert resp.status == 200
    assert datetime.fromisoformat(answer.server_time)
