"""Device authentication on every /v1 endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from provisioning.registry import DeviceBundle, add_device, revoke_device

ENDPOINTS = ["/v1/verify", "/v1/audit", "/v1/heartbeat"]
BODY = {"tap_id": "t1", "credential": {"kind": "id_card", "id_number": "11010519491231002X"}}


async def expect(client: TestClient, headers: dict[str, str], status: int, error: str) -> None:
    for path in ENDPOINTS:
        resp = await client.post(path, json=BODY, headers=headers)
        assert resp.status == status, path
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"] == error


async def test_no_header(client: TestClient) -> None:
    await expect(client, {}, 401, "unauthenticated")
    resp = await client.post("/v1/verify", json=BODY)
    assert resp.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        "Basic abc",
        "Bearer",
        "Bearer nodot",
        "Bearer a.b.c",
        "bearer x.y",
        "Bearer .secret",
        "Bearer é.x",
    ],
)
async def test_garbage_header(client: TestClient, header: str) -> None:
    await expect(client, {"Authorization": header}, 401, "unauthenticated")


async def test_wrong_secret(client: TestClient, device: DeviceBundle) -> None:
    await expect(
        client, {"Authorization": f"Bearer {device.device_id}.wrong"}, 401, "unauthenticated"
    )


async def test_unknown_device(client: TestClient, device: DeviceBundle) -> None:
    await expect(
        client, {"Authorization": f"Bearer k-0000000000.{device.secret}"}, 401, "unauthenticated"
    )


async def test_revoked_takes_effect_on_next_request(
    client: TestClient, device: DeviceBundle, auth: dict[str, str], db_path: Path
) -> None:
    resp = await client.post("/v1/verify", json=BODY, headers=auth)
    assert resp.status == 200
    revoke_device(db_path, device.serial)
    await expect(client, auth, 403, "revoked")


async def test_rotated_secret_replaces_old(
    client: TestClient, device: DeviceBundle, auth: dict[str, str], db_path: Path
) -> None:
    new = add_device(db_path, device.serial, device.site, rotate_secret=True)
    assert new.device_id == device.device_id
    await expect(client, auth, 401, "unauthenticated")
    resp = await client.post(
        "/v1/verify", json=BODY, headers={"Authorization": f"Bearer {new.device_id}.{new.secret}"}
    )
    assert resp.status == 200


async def test_healthz_is_open(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
