"""``GET /v1/device/voice-packs/{sha256}[/pack]``: a kiosk gets the pack its merged
``voice.pack`` names (fleet < site < device) and nothing else; ``voice.pack`` may only name
a stored pack."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from core.voicepack import pack_sha256, read_pack, verify_pack
from server.errors import InvalidField
from server.fleet import registry
from server.storage.db import connect, transaction
from server.voicepacks import views
from tests.releases.support import add_kiosks, tokens
from tests.server.voice_packs_support import (
    PUBLIC_HEX,
    Client,
    Clock,
    pack_client,
    pack_data,
    post_pack,
    upload_body,
)


@pytest.fixture
async def app(aiohttp_client: Any, db_path: Path | str) -> tuple[Client, dict[str, str]]:
    return await pack_client(aiohttp_client, db_path, PUBLIC_HEX, Clock())


async def _set(
    client: Client, admin: dict[str, str], scope: str, target: str, value: object
) -> Any:
    body = {"scope": scope, "target": target, "key": "voice.pack", "value": value}
    return await client.post("/v1/admin/config", json=body, headers=admin)


async def _published(client: Client, admin: dict[str, str], data: bytes) -> str:
    resp = await post_pack(client, admin, upload_body(data))
    assert resp.status == 200, await resp.text()
    return pack_sha256(data)


async def _statuses(client: Client, headers: dict[str, str], sha256: str) -> tuple[int, int]:
    """(info status, zip status) of one pack for one caller."""
    base = f"/v1/device/voice-packs/{sha256}"
    return (
        (await client.get(base, headers=headers)).status,
        (await client.get(f"{base}/pack", headers=headers)).status,
    )


async def test_a_kiosk_downloads_the_pack_its_layers_name(
    app: tuple[Client, dict[str, str]], tmp_path: Path, db_path: Path | str
) -> None:
    client, admin = app
    spring = pack_data(tmp_path, "spring")
    autumn = pack_data(tmp_path, "autumn", "请出示")
    a, b = await _published(client, admin, spring), await _published(client, admin, autumn)
    kiosk, elsewhere = add_kiosks(db_path, "site-a", 1) + add_kiosks(db_path, "site-b", 1)
    auth = tokens(db_path, [kiosk, elsewhere])
    assert await _statuses(client, auth[kiosk], a) == (403, 403)  # nothing set yet

    assert (await _set(client, admin, "fleet", "", a)).status == 200
    info = await client.get(f"/v1/device/voice-packs/{a}", headers=auth[kiosk])
    assert info.status == 200
    facts = await info.json()
    assert (facts["sha256"], facts["name"], facts["size"]) == (a, "spring", len(spring))
    resp = await client.get(f"/v1/device/voice-packs/{a}/pack", headers=auth[kiosk])
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/zip"
    data = await resp.read()
    assert hashlib.sha256(data).hexdigest() == a and len(data) == facts["size"]
    verify_pack(PUBLIC_HEX, a, facts["signature"])  # what the kiosk checks
    assert read_pack(data).manifest.prompts == {"check": "请核查"}
    assert await _statuses(client, auth[kiosk], b) == (403, 403)

    assert (await _set(client, admin, "site", "site-a", b)).status == 200
    assert await _statuses(client, auth[kiosk], a) == (403, 403)
    assert await _statuses(client, auth[kiosk], b) == (200, 200)
    assert await _statuses(client, auth[elsewhere], a) == (200, 200)  # still the fleet's

    assert (await _set(client, admin, "device", kiosk, "")).status == 200
    for sha256 in (a, b):
        assert await _statuses(client, auth[kiosk], sha256) == (403, 403)
    resp = await client.get(f"/v1/device/voice-packs/{b}/pack", headers=auth[kiosk])
    assert (await resp.json())["error"] == "not_offered"

    assert (await _set(client, admin, "device", kiosk, None)).status == 200  # removed
    assert await _statuses(client, auth[kiosk], b) == (200, 200)


async def test_only_a_kiosk_session_downloads(
    app: tuple[Client, dict[str, str]], tmp_path: Path, db_path: Path | str
) -> None:
    client, admin = app
    sha256 = await _published(client, admin, pack_data(tmp_path, "spring"))
    assert (await _set(client, admin, "fleet", "", sha256)).status == 200
    assert await _statuses(client, {}, sha256) == (401, 401)
    assert await _statuses(client, admin, sha256) == (401, 401)  # a person is no kiosk
    garbage = {"Authorization": "Bearer not-a-session"}
    assert await _statuses(client, garbage, sha256) == (401, 401)


async def test_an_offered_pack_the_server_lacks_is_404(
    app: tuple[Client, dict[str, str]], db_path: Path | str
) -> None:
    """Only a database edited by hand (or restored without its packs) names a pack that is
    not stored: the kiosk hears 404, and 403 still comes first for what it is not given."""
    client, _admin = app
    [kiosk] = add_kiosks(db_path, "site-a", 1)
    auth = tokens(db_path, [kiosk])[kiosk]
    missing = "ab" * 32
    with connect(db_path) as conn, transaction(conn):
        conn.execute(
            "INSERT INTO fleet_config (scope, target, key, value, version, updated_at)"
            " VALUES ('fleet', '', 'voice.pack', ?, 1, '2026-11-28T00:00:00+00:00')",
            (f'"{missing}"',),
        )
    assert await _statuses(client, auth, missing) == (404, 404)
    assert await _statuses(client, auth, "cd" * 32) == (403, 403)
    assert await _statuses(client, auth, "not-a-hash") == (403, 403)


async def test_voice_pack_must_name_a_stored_pack(
    app: tuple[Client, dict[str, str]], tmp_path: Path, db_path: Path | str
) -> None:
    client, admin = app
    data = pack_data(tmp_path, "spring")
    sha256 = pack_sha256(data)
    resp = await _set(client, admin, "fleet", "", sha256)
    assert resp.status == 400
    detail = (await resp.json())["detail"]
    assert detail == f"no voice pack {sha256[:12]}…: publish it first (kiosk voice pack publish)"
    with connect(db_path) as conn, transaction(conn), pytest.raises(InvalidField):
        registry.set_config(conn, "fleet", "", "voice.pack", sha256)  # the local backend
    assert (await _set(client, admin, "fleet", "", "")).status == 200  # "" is: no pack
    assert (await _set(client, admin, "fleet", "", "ABC")).status == 400  # not a hash
    await _published(client, admin, data)
    assert (await _set(client, admin, "fleet", "", sha256)).status == 200
    layers = await (await client.get("/v1/admin/config", headers=admin)).json()
    assert [(c["key"], c["value"]) for c in layers["layers"]] == [("voice.pack", sha256)]


async def test_downloads_past_the_ceiling_wait_for_the_next_heartbeat(
    app: tuple[Client, dict[str, str]],
    tmp_path: Path,
    db_path: Path | str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past :data:`MAX_DOWNLOADS` under way, a kiosk hears 429 with Retry-After (taps keep
    their share); the facts stay answerable, and the ceiling frees again."""
    client, admin = app
    sha256 = await _published(client, admin, pack_data(tmp_path, "spring"))
    assert (await _set(client, admin, "fleet", "", sha256)).status == 200
    [kiosk] = add_kiosks(db_path, "site-a", 1)
    auth = tokens(db_path, [kiosk])[kiosk]
    monkeypatch.setattr(views, "MAX_DOWNLOADS", 0)
    resp = await client.get(f"/v1/device/voice-packs/{sha256}/pack", headers=auth)
    assert resp.status == 429 and resp.headers["Retry-After"] == "30"
    assert (await resp.json())["error"] == "overloaded"
    assert await _statuses(client, auth, sha256) == (200, 429)
    monkeypatch.setattr(views, "MAX_DOWNLOADS", 1)
    assert await _statuses(client, auth, sha256) == (200, 200)
    assert await _statuses(client, auth, sha256) == (200, 200)  # the slot was given back
