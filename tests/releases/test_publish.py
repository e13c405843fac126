"""``POST/GET /v1/admin/releases``: a wheel is stored once per version, only when its bytes
are what the upload claims and (with ``[releases] release_key``) signed by the release key."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.config import ServerConfig
from server.releases.settings import ReleaseSettings
from server.storage.db import connect
from tests.releases.support import Client, release_app, upload_body, wheel_data
from tests.server.users_support import add_user, bearer, token_for

WHEEL = wheel_data("1.4.0", b"# a few bytes" * 100)


async def _publish(client: Client, admin: dict[str, str], body: dict[str, Any]) -> Any:
    return await client.post("/v1/admin/releases", json=body, headers=admin)


async def test_publish_stores_once_and_lists(client: Client, admin: dict[str, str]) -> None:
    resp = await _publish(client, admin, upload_body("1.4.0", WHEEL))
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["created"] is True
    assert answer["release"]["size"] == len(WHEEL) and answer["release"]["published_by"] == "ops"
    again = await (await _publish(client, admin, upload_body("1.4.0", WHEEL))).json()
    assert again["created"] is False
    listed = await (await client.get("/v1/admin/releases", headers=admin)).json()
    assert [r["version"] for r in listed["releases"]] == ["1.4.0"]
    assert "wheel" not in listed["releases"][0]


async def test_same_version_with_other_bytes_is_409(client: Client, admin: dict[str, str]) -> None:
    assert (await _publish(client, admin, upload_body("1.4.0", WHEEL))).status == 200
    resp = await _publish(client, admin, upload_body("1.4.0", wheel_data("1.4.0", b"!")))
    assert resp.status == 409
    assert "another wheel" in (await resp.json())["detail"]


async def test_bytes_that_do_not_match_are_refused(client: Client, admin: dict[str, str]) -> None:
    honest = upload_body("1.4.0", WHEEL)
    wrong_sha = {**honest, "sha256": "0" * 64}
    resp = await _publish(client, admin, wrong_sha)
    assert resp.status == 400 and "sha256" in (await resp.json())["detail"]
    resp = await _publish(client, admin, {**honest, "size": len(WHEEL) + 1})
    assert resp.status == 400 and "size" in (await resp.json())["detail"]
    resp = await _publish(client, admin, {**honest, "version": "../etc"})
    assert resp.status == 400
    listed = await (await client.get("/v1/admin/releases", headers=admin)).json()
    assert listed["releases"] == []


async def test_the_version_must_be_the_wheels_metadata_version(
    client: Client, admin: dict[str, str]
) -> None:
    """Kiosks report the METADATA version: a release under another would be offered to
    them again and again, each switching to it and never seeing itself on it."""
    resp = await _publish(client, admin, upload_body("2.0.0+pi", wheel_data("2.0.0")))
    assert resp.status == 400
    assert "METADATA says '2.0.0', not '2.0.0+pi'" in (await resp.json())["detail"]
    renamed = upload_body("2.0.0", wheel_data("2.0.0"), filename="siheyi-2.0.1-py3-none-any.whl")
    resp = await _publish(client, admin, renamed)
    assert resp.status == 400
    assert "names version '2.0.1'" in (await resp.json())["detail"]
    for not_a_wheel in (b"PK\x03\x04 no zip", wheel_data("2.0.0", metadata="")):
        resp = await _publish(client, admin, upload_body("2.0.0", not_a_wheel))
        assert resp.status == 400 and "wheel:" in (await resp.json())["detail"]
    listed = await (await client.get("/v1/admin/releases", headers=admin)).json()
    assert listed["releases"] == []
    resp = await _publish(client, admin, upload_body("2.0.0", wheel_data("2.0.0")))
    assert resp.status == 200, await resp.text()


async def test_a_signature_not_by_the_pinned_key_is_refused(
    client: Client, admin: dict[str, str]
) -> None:
    forged = upload_body("1.4.0", WHEEL, key=Ed25519PrivateKey.generate())
    resp = await _publish(client, admin, forged)
    assert resp.status == 400
    assert "not signed by the pinned release key" in (await resp.json())["detail"]
    moved = upload_body("1.4.0", WHEEL)
    moved["signature"] = upload_body("1.5.0", WHEEL)["signature"]  # another version's
    assert (await _publish(client, admin, moved)).status == 400


async def test_without_a_pinned_key_any_matching_wheel_is_stored(
    aiohttp_client: Any, db_path: Any
) -> None:
    config = ServerConfig(database=str(db_path), releases=ReleaseSettings(""))
    add_user(db_path, "ops", "admin")
    client = await aiohttp_client(release_app(config))
    admin = bearer(await token_for(client, "ops"))
    wheel = wheel_data("2.0.0")
    unsigned_by_us = upload_body("2.0.0", wheel, key=Ed25519PrivateKey.generate())
    assert (await _publish(client, admin, unsigned_by_us)).status == 200
    with connect(db_path) as conn:
        row = conn.execute("SELECT wheel FROM release_wheels WHERE version = '2.0.0'").fetchone()
    assert bytes(row[0]) == wheel


async def test_only_admins_publish(client: Client, db_path: Any) -> None:
    add_user(db_path, "gus", "guard", ["site-a"])
    guard = bearer(await token_for(client, "gus"))
    assert (await _publish(client, guard, upload_body("1.4.0", WHEEL))).status == 403
    assert (await client.post("/v1/admin/releases", json={})).status == 401
