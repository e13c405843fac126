"""Voice packs in server tests: packs, signed uploads, the app with the release key pinned,
and a clock the test moves (so "newest first" is a fact, not a race within one second)."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.voicepack import build_pack, pack_sha256, sign_pack
from server.app import create_app
from server.config import ServerConfig
from server.releases.settings import ReleaseSettings
from tests.server.users_support import add_user, bearer, token_for

Client = TestClient[web.Request, web.Application]
RELEASE_KEY = Ed25519PrivateKey.generate()
PUBLIC_HEX = RELEASE_KEY.public_key().public_bytes_raw().hex()


class Clock:
    """Now, moved forward by the test."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def pack_data(folder: Path, name: str, words: str = "请核查") -> bytes:
    """A small pack: one clip (any bytes: the server never decodes audio) and one prompt."""
    clip = folder / f"{name}-pass.wav"
    clip.write_bytes(b"RIFF" + name.encode() * 100)
    return build_pack(name, {"pass": clip}, {"check": words})


def upload_body(
    data: bytes, key: Ed25519PrivateKey = RELEASE_KEY, **changes: Any
) -> dict[str, Any]:
    """The ``POST /v1/admin/voice-packs`` body of ``data`` signed with ``key``."""
    sha256 = pack_sha256(data)
    body = {
        "sha256": sha256,
        "signature": sign_pack(key, sha256),
        "size": len(data),
        "pack": base64.b64encode(data).decode(),
    }
    return {**body, **changes}


async def post_pack(client: Client, admin: dict[str, str], body: dict[str, Any]) -> Any:
    """``POST /v1/admin/voice-packs`` (the body as a stream, as aiohttp wants a large one)."""
    data = io.BytesIO(json.dumps(body).encode())
    headers = {**admin, "Content-Type": "application/json"}
    return await client.post("/v1/admin/voice-packs", data=data, headers=headers)


async def pack_client(
    aiohttp_client: Any, db_path: Path | str, release_key: str, clock: Clock
) -> tuple[Client, dict[str, str]]:
    """The app (``[releases] release_key`` = ``release_key``) and an admin's bearer header."""
    config = ServerConfig.default(database=db_path, releases=ReleaseSettings(release_key))
    add_user(db_path, "ops", "admin")
    client: Client = await aiohttp_client(create_app(config, clock=clock))
    return client, bearer(await token_for(client, "ops"))
