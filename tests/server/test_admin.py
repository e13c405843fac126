"""The admin API: argon2 login, bulk registration, device actions, overload (429)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.accounts.passwords import hash_password
from server.app import create_app
from server.config import LimitSettings, ServerConfig
from server.fleet.admin import create_admin
from server.storage.db import connect, transaction

from .conftest import bearer

PASSWORD = "correct horse battery"


@pytest.fixture
def admin_db(db_path: Path) -> Path:
    with connect(db_path) as conn, transaction(conn):
        create_admin(conn, "ops", hash_password(PASSWORD), "2026-01-01T00:00:00+00:00")
        conn.execute("INSERT INTO sites (site) VALUES ('north')")
    return db_path


@pytest.fixture
async def admin(aiohttp_client: Any, config: ServerConfig, admin_db: Path) -> TestClient:
    return await aiohttp_client(create_app(config))  # type: ignore[no-any-return]


async def login(client: TestClient, password: str = PASSWORD) -> dict[str, str]:
    resp = await client.post("/v1/admin/login", json={"username": "ops", "password": password})
    assert resp.status == 200, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def test_login(admin: TestClient, admin_db: Path) -> None:
    resp = await admin.post("/v1/admin/login", json={"username": "ops", "password": "nope"})
    assert resp.status == 401
    resp = await admin.post("/v1/admin/login", json={"username": "who", "password": PASSWORD})
    assert resp.status == 401
    assert (await admin.get("/v1/admin/devices")).status == 401
    headers = await login(admin)
    assert (await admin.get("/v1/admin/devices", headers=headers)).status == 200
    with connect(admin_db) as conn:
        [(stored,)] = conn.execute("SELECT password_hash FROM admins").fetchall()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


async def test_device_tokens_are_not_admin_tokens(admin: TestClient, admin_db: Path) -> None:
    from provisioning.registry import add_device
    from siheyi.cli import local_fleet

    device = add_device(local_fleet(None, admin_db), "SN-X", "north")
    resp = await admin.get("/v1/admin/devices", headers=bearer(admin_db, device))
    assert resp.status == 401


async def test_bulk_registration_thousands_per_request(admin: TestClient) -> None:
    headers = await login(admin)
    items: list[Any] = [
        {
            "serial": f"SN-{i:05d}",
            "site": "north",
            "gate": "g1",
            "public_key": Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex(),
        }
        for i in range(3000)
    ]
    items[10]["site"] = "atlantis"
    items[20] = {"serial": "SN-PRIV", "site": "north", "private_key": "00" * 32}
    items[30] = "not an object"
    resp = await admin.post("/v1/admin/devices", json={"devices": items}, headers=headers)
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    assert report["created"] == 2997
    assert sorted(e["row"] for e in report["errors"]) == [11, 21, 31]
    assert "never send a private key" in report["errors"][1]["error"]
    listed = await (await admin.get("/v1/admin/devices?site=north", headers=headers)).json()
    assert len(listed["devices"]) == 2997 and all(d["enrolled"] for d in listed["devices"])
    again = await admin.post(
        "/v1/admin/devices", json={"devices": items[:5], "dry_run": True}, headers=headers
    )
    assert (await again.json())["unchanged"] == 5


async def test_device_actions(admin: TestClient) -> None:
    headers = await login(admin)
    body = {"devices": [{"serial": "SN-1", "site": "north"}]}
    assert (await admin.post("/v1/admin/devices", json=body, headers=headers)).status == 200
    for action, status in (
        ("quarantine", "quarantined"),
        ("release", "active"),
        ("revoke", "revoked"),
    ):
        resp = await admin.post(f"/v1/admin/devices/SN-1/{action}", headers=headers)
        assert resp.status == 200 and (await resp.json())["status"] == status
    resp = await admin.post("/v1/admin/devices/SN-1/release", headers=headers)
    assert resp.status == 409  # revocation is final
    resp = await admin.post("/v1/admin/devices/SN-404/revoke", headers=headers)
    assert resp.status == 404
    body = {"devices": [{"serial": "SN-2", "site": "north"}]}
    assert (await admin.post("/v1/admin/devices", json=body, headers=headers)).status == 200
    resp = await admin.post("/v1/admin/devices/SN-2/enrol-code", headers=headers)
    assert resp.status == 200 and len((await resp.json())["code"]) == 11
    resp = await admin.post(
        "/v1/admin/config",
        json={"scope": "site", "target": "north", "key": "verify.deadline_s", "value": 0.9},
        headers=headers,
    )
    assert (await resp.json())["config_version"] == 1
    resp = await admin.post(
        "/v1/admin/config",
        json={"scope": "site", "target": "north", "key": "voice.rate", "value": 150},
        headers=headers,
    )
    assert resp.status == 400  # kiosks cannot apply it: refused, not silently ignored


async def test_overload_answers_429_with_retry_after(
    aiohttp_client: Any, config: ServerConfig, admin_db: Path
) -> None:
    limited = replace(
        config, limits=LimitSettings(login_per_s=0.1, session_per_s=1, session_burst=1)
    )
    client: TestClient = await aiohttp_client(create_app(limited))
    await login(client)  # the burst allows one
    resp = await client.post("/v1/admin/login", json={"username": "ops", "password": PASSWORD})
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"] == "overloaded"
    body = {"device_id": "k-whoever"}
    await client.post("/v1/session/challenge", json=body)
    resp = await client.post("/v1/session/challenge", json=body)
    assert resp.status == 429 and "Retry-After" in resp.headers
    assert (await client.get("/healthz")).status == 200  # never limited


def test_identity_and_limit_settings_are_documented() -> None:
    from server.config import IDENTITY_BOUNDS, LIMIT_BOUNDS

    doc = (Path(__file__).parents[2] / "docs" / "server.md").read_text(encoding="utf-8")
    for section, keys in (("identity", IDENTITY_BOUNDS), ("limits", LIMIT_BOUNDS)):
        for key in keys:
            assert f"| `{section}.{key}` |" in doc, key


async def test_register_one_kiosk_sites_and_config_list(admin: TestClient) -> None:
    headers = await login(admin)
    key = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    body = {"site": "south", "gate": "g1", "public_key": key}
    resp = await admin.post("/v1/admin/devices/SN-R", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    registered = await resp.json()
    assert (registered["serial"], registered["site"]) == ("SN-R", "south")
    assert len(bytes.fromhex(registered["site_key"])) == 32 and "private_key" not in registered
    resp = await admin.post("/v1/admin/devices/SN-R", json=body, headers=headers)
    assert resp.status == 409 and (await resp.json())["error"] == "serial_exists"
    resp = await admin.post(
        "/v1/admin/devices/SN-R", json={**body, "public_key": "XY"}, headers=headers
    )
    assert resp.status == 400 and (await resp.json())["detail"].startswith("public_key:")
    rekey = {**body, "public_key": "ab" * 32, "rekey": True}
    resp = await admin.post("/v1/admin/devices/SN-R", json=rekey, headers=headers)
    assert resp.status == 200 and (await resp.json())["device_id"] == registered["device_id"]

    resp = await admin.post("/v1/admin/sites", json={"sites": ["north", "east"]}, headers=headers)
    assert (await resp.json())["added"] == ["east"]
    resp = await admin.get("/v1/admin/sites", headers=headers)
    assert (await resp.json())["sites"] == ["east", "north", "south"]
    resp = await admin.post("/v1/admin/sites", json={"sites": [" "]}, headers=headers)
    assert resp.status == 400

    resp = await admin.post(
        "/v1/admin/devices/SN-R/enrol-code", json={"ttl_s": 120}, headers=headers
    )
    assert resp.status == 200 and (await resp.json())["serial"] == "SN-R"
    resp = await admin.post("/v1/admin/devices/SN-R/enrol-code", json={"ttl_s": 5}, headers=headers)
    assert resp.status == 400 and "ttl_s" in (await resp.json())["detail"]
    config = {"scope": "fleet", "key": "verify.deadline_s", "value": 1.0}
    assert (await admin.post("/v1/admin/config", json=config, headers=headers)).status == 200
    resp = await admin.post("/v1/admin/config", json={**config, "scope": "x"}, headers=headers)
    assert resp.status == 400 and (await resp.json())["detail"].startswith("scope:")
    resp = await admin.get("/v1/admin/config", headers=headers)
    [layer] = (await resp.json())["layers"]
    assert (layer["scope"], layer["key"], layer["value"]) == ("fleet", "verify.deadline_s", 1.0)
    assert (await admin.get("/v1/admin/config")).status == 401


async def test_bulk_with_row_numbers_and_bundle_facts(admin: TestClient) -> None:
    headers = await login(admin)
    body = {
        "devices": [{"serial": "SN-1", "site": "north"}, {"serial": "bad!", "site": "north"}],
        "rows": [2, 7],
        "bundle": True,
    }
    report = await (await admin.post("/v1/admin/devices", json=body, headers=headers)).json()
    assert report["devices"][0]["row"] == 2
    assert [(e["row"], e["error"][:6]) for e in report["errors"]] == [(7, "row 7:")]
    assert set(report["bundle"]["site_keys"]) == {"north"}
    assert len(bytes.fromhex(report["bundle"]["server_key"])) == 32
    resp = await admin.post("/v1/admin/devices", json={**body, "rows": [1]}, headers=headers)
    assert resp.status == 400 and "rows" in (await resp.json())["detail"]


async def test_dry_run_invents_no_device_ids_and_errors_speak_api_fields(
    admin: TestClient,
) -> None:
    """A dry run's new devices have no id yet (an id it showed would never exist), and a
    refusal names what to send (``create_sites``), never a command line flag."""
    headers = await login(admin)
    body = {
        "devices": [{"serial": "SN-1", "site": "north"}, {"serial": "SN-2", "site": "atlantis"}],
        "dry_run": True,
    }
    resp = await admin.post("/v1/admin/devices", json=body, headers=headers)
    report = await resp.json()
    assert resp.status == 200 and report["created"] == 1
    assert report["devices"] == [
        {"row": 1, "serial": "SN-1", "device_id": None, "action": "created"}
    ]
    (error,) = report["errors"]
    assert "create_sites" in error["error"] and "--" not in error["error"]
    resp = await admin.post("/v1/admin/devices", json={**body, "dry_run": False}, headers=headers)
    (done,) = (await resp.json())["devices"]
    assert done["device_id"].startswith("k-")
    key = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    resp = await admin.post(
        "/v1/admin/devices/SN-1", json={"site": "north", "public_key": key}, headers=headers
    )
    assert resp.status == 409
    text = await resp.text()
    assert "rekey" in text and "--" not in text


async def test_config_for_an_unknown_site_names_no_command(admin: TestClient) -> None:
    headers = await login(admin)
    resp = await admin.post(
        "/v1/admin/config",
        json={"scope": "site", "target": "atlantis", "key": "verify.deadline_s", "value": 0.9},
        headers=headers,
    )
    text = await resp.text()
    assert resp.status == 404 and "unknown site 'atlantis'" in text
    assert "kiosk" not in text and "--" not in text
