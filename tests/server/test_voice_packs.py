"""``POST/GET /v1/admin/voice-packs``: a pack is stored once, only when its bytes are what
the upload claims, its archive is one kiosks read, and (with ``[releases] release_key``) it
is signed by the release key; every refusal is a ``400 bad_pack`` naming why, and logged."""

from __future__ import annotations

import io
import logging
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.releases import sign_release
from core.voicepack import MAX_PACK_BYTES, pack_sha256
from server.storage.db import connect
from tests.server.users_support import add_user, bearer, token_for
from tests.server.voice_packs_support import (
    PUBLIC_HEX,
    RELEASE_KEY,
    Client,
    Clock,
    pack_client,
    pack_data,
    post_pack,
    upload_body,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def app(
    aiohttp_client: Any, db_path: Path | str, clock: Clock
) -> tuple[Client, dict[str, str]]:
    return await pack_client(aiohttp_client, db_path, PUBLIC_HEX, clock)


async def _listed(client: Client, admin: dict[str, str]) -> list[dict[str, Any]]:
    resp = await client.get("/v1/admin/voice-packs", headers=admin)
    assert resp.status == 200
    packs = (await resp.json())["packs"]
    assert isinstance(packs, list)
    return packs


async def test_publish_stores_once_and_lists_newest_first(
    app: tuple[Client, dict[str, str]], tmp_path: Path, clock: Clock, db_path: Path | str
) -> None:
    client, admin = app
    spring, autumn = pack_data(tmp_path, "spring"), pack_data(tmp_path, "autumn", "请出示")
    resp = await post_pack(client, admin, upload_body(spring))
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["created"] is True
    assert answer["pack"] == {
        "sha256": pack_sha256(spring),
        "name": "spring",
        "size": len(spring),
        "signature": upload_body(spring)["signature"],
        "published_at": answer["pack"]["published_at"],
        "published_by": "ops",
    }
    again = await (await post_pack(client, admin, upload_body(spring))).json()
    assert again == {**answer, "created": False}
    clock.advance(60)
    assert (await post_pack(client, admin, upload_body(autumn))).status == 200
    listed = await _listed(client, admin)
    assert [p["name"] for p in listed] == ["autumn", "spring"]
    assert all("pack" not in p and "data" not in p for p in listed)
    with connect(db_path) as conn:
        row = conn.execute(
            "SELECT data FROM voice_packs WHERE sha256 = ?", (pack_sha256(spring),)
        ).fetchone()
    assert bytes(row[0]) == spring


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


MANIFEST = b'{"format": 1, "name": "x", "clips": {"pass": "pass.wav"}}'


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"PK\x03\x04 not a zip at all", "not a readable zip"),
        (_zip({"pass.wav": b"RIFF"}), "no pack.json"),
        (_zip({"pack.json": MANIFEST, "../pass.wav": b"RIFF"}), "'../pass.wav' is not allowed"),
        (_zip({"pack.json": MANIFEST}), "which is not in the pack"),
        (_zip({"pack.json": b"[1, 2]"}), "must be an object"),
    ],
)
async def test_a_pack_no_kiosk_reads_is_refused(
    app: tuple[Client, dict[str, str]],
    data: bytes,
    words: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, admin = app
    with caplog.at_level(logging.WARNING, logger="server.voicepacks.views"):
        resp = await post_pack(client, admin, upload_body(data))
    assert resp.status == 400
    answer = await resp.json()
    assert answer["error"] == "bad_pack" and words in answer["detail"], answer
    assert f"voice pack {pack_sha256(data)[:12]} refused" in caplog.text and words in caplog.text
    assert await _listed(client, admin) == []


async def test_bytes_that_do_not_match_are_refused(
    app: tuple[Client, dict[str, str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, admin = app
    data = pack_data(tmp_path, "spring")
    honest = upload_body(data)
    with caplog.at_level(logging.WARNING, logger="server.voicepacks.views"):
        wrong_sha = await post_pack(client, admin, {**honest, "sha256": "0" * 64})
        wrong_size = await post_pack(client, admin, {**honest, "size": len(data) + 1})
    assert wrong_sha.status == wrong_size.status == 400
    assert "sha256: does not match" in (await wrong_sha.json())["detail"]
    detail = (await wrong_size.json())["detail"]
    assert detail == f"size: the pack has {len(data)} bytes, not {len(data) + 1}"
    assert caplog.text.count("refused") == 2
    assert await _listed(client, admin) == []


async def test_a_pack_over_the_limit_is_refused(app: tuple[Client, dict[str, str]]) -> None:
    """One byte over 8 MiB: refused by size before any zip is opened (the upload itself,
    base64, still fits the body limit); a body beyond that limit is ``413``."""
    client, admin = app
    data = b"\0" * (MAX_PACK_BYTES + 1)
    resp = await post_pack(client, admin, upload_body(data))
    assert resp.status == 400
    assert (await resp.json())[
        "detail"
    ] == f"size: {len(data)} bytes, a pack may have {MAX_PACK_BYTES}"
    huge = b"\0" * (MAX_PACK_BYTES * 5 // 4)
    assert (await post_pack(client, admin, upload_body(huge))).status == 413


async def test_a_signature_not_by_the_pinned_key_is_refused(
    app: tuple[Client, dict[str, str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, admin = app
    data = pack_data(tmp_path, "spring")
    sha256 = pack_sha256(data)
    forged = upload_body(data, key=Ed25519PrivateKey.generate())
    as_release = upload_body(data, signature=sign_release(RELEASE_KEY, "1.0.0", "x.whl", sha256))
    other_pack = upload_body(data, signature=upload_body(pack_data(tmp_path, "b"))["signature"])
    with caplog.at_level(logging.WARNING, logger="server.voicepacks.views"):
        for body in (forged, as_release, other_pack):
            resp = await post_pack(client, admin, body)
            assert resp.status == 400
            detail = (await resp.json())["detail"]
            assert detail == f"voice pack {sha256[:12]} is not signed by the pinned release key"
    assert caplog.text.count("not signed by the pinned release key") == 3
    assert await _listed(client, admin) == []
    assert (await post_pack(client, admin, upload_body(data))).status == 200


async def test_an_unsigned_archive_is_refused_before_it_is_unpacked(
    app: tuple[Client, dict[str, str]],
) -> None:
    """With the release key pinned, an archive that is not the key's is refused for its
    signature before the server reads it: an admin token alone cannot make the server
    decompress anything (a manifest naming one big member under many keys once cost 2 GB)."""
    client, admin = app
    data = _zip({"pack.json": b"[1, 2]"})  # unreadable as a pack, too
    resp = await post_pack(client, admin, upload_body(data, key=Ed25519PrivateKey.generate()))
    assert resp.status == 400
    assert "is not signed by the pinned release key" in (await resp.json())["detail"]


async def test_without_a_pinned_key_any_readable_pack_is_stored_once(
    aiohttp_client: Any, db_path: Path | str, tmp_path: Path
) -> None:
    """The kiosks' own check is then the only one; the same bytes under another signature
    are a conflict (a pack names one signed zip: kiosks must agree on what it is)."""
    client, admin = await pack_client(aiohttp_client, db_path, "", Clock())
    data = pack_data(tmp_path, "spring")
    unsigned_by_us = upload_body(data, key=Ed25519PrivateKey.generate())
    assert (await post_pack(client, admin, unsigned_by_us)).status == 200
    resp = await post_pack(client, admin, upload_body(data))
    assert resp.status == 409
    answer = await resp.json()
    assert answer["error"] == "conflict" and "another signature" in answer["detail"]
    assert [p["signature"] for p in await _listed(client, admin)] == [unsigned_by_us["signature"]]


async def test_only_admins_publish_and_list(
    app: tuple[Client, dict[str, str]], tmp_path: Path, db_path: Path | str
) -> None:
    client, _admin = app
    add_user(db_path, "gus", "guard", ["site-a"])
    guard = bearer(await token_for(client, "gus"))
    body = upload_body(pack_data(tmp_path, "spring"))
    assert (await post_pack(client, guard, body)).status == 403
    assert (await client.get("/v1/admin/voice-packs", headers=guard)).status == 403
    assert (await client.post("/v1/admin/voice-packs", json={})).status == 401
    assert (await client.get("/v1/admin/voice-packs")).status == 401


def _corrupt_member(data: bytes, member: str) -> bytes:
    """``data`` with the first bytes of ``member``'s compressed stream overwritten."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    return data[:start] + b"\xff\xff\xff\xff" + data[start + 4 :]


async def test_a_corrupt_member_is_a_bad_pack_not_a_server_error(
    app: tuple[Client, dict[str, str]],
) -> None:
    """A broken deflate stream (zlib.error in the zip reader) is the admin's mistake, answered
    as one: never a 500 for a body the server could read."""
    client, admin = app
    members = {"pack.json": MANIFEST, "pass.wav": b"A" * 5000}
    data = _corrupt_member(_zip(members, zipfile.ZIP_DEFLATED), "pass.wav")
    resp = await post_pack(client, admin, upload_body(data))
    assert resp.status == 400 and (await resp.json())["error"] == "bad_pack"
