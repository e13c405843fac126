"""Releases in tests: wheels, signed uploads, kiosks in bulk, heartbeats and the app with the
release routes (added when the app factory does not serve them yet)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.releases import sign_release
from server.app import create_app
from server.config import ServerConfig
from server.fleet import registry
from server.fleet.sessions import mint_token
from server.storage.db import connect, transaction

Client = TestClient[web.Request, web.Application]
RELEASE_KEY = Ed25519PrivateKey.generate()
PUBLIC_HEX = RELEASE_KEY.public_key().public_bytes_raw().hex()


def release_app(config: ServerConfig) -> web.Application:
    """The app the release tests talk to."""
    return create_app(config)


_EPOCH = (2026, 1, 1, 0, 0, 0)


def wheel_data(version: str, payload: bytes = b"", metadata: str | None = None) -> bytes:
    """A small wheel of ``siheyi`` ``version`` (a METADATA file saying ``metadata``, by
    default ``version``, and one module ending in ``payload``), stored uncompressed."""
    buffer = io.BytesIO()
    metadata = version if metadata is None else metadata
    with zipfile.ZipFile(buffer, "w") as wheel:  # fixed times: the same bytes every call
        wheel.writestr(
            zipfile.ZipInfo(f"siheyi-{version}.dist-info/METADATA", _EPOCH),
            f"Metadata-Version: 2.1\nName: siheyi\nVersion: {metadata}\n",
        )
        wheel.writestr(
            zipfile.ZipInfo("siheyi/__init__.py", _EPOCH),
            f"VERSION = {version!r}\n".encode() + payload,
        )
    return buffer.getvalue()


def make_wheel(
    folder: Path, version: str, payload: bytes = b"", metadata: str | None = None
) -> Path:
    """:func:`wheel_data` as ``folder/siheyi-<version>-py3-none-any.whl``."""
    path = folder / f"siheyi-{version}-py3-none-any.whl"
    path.write_bytes(wheel_data(version, payload, metadata))
    return path


def upload_body(
    version: str,
    data: bytes,
    key: Ed25519PrivateKey = RELEASE_KEY,
    filename: str | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """The ``POST /v1/admin/releases`` body of ``data`` signed with ``key`` (as ``filename``,
    by default ``siheyi-<version>-py3-none-any.whl``)."""
    filename = filename or f"siheyi-{version}-py3-none-any.whl"
    sha256 = hashlib.sha256(data).hexdigest()
    body = {
        "version": version,
        "filename": filename,
        "sha256": sha256,
        "signature": sign_release(key, version, filename, sha256),
        "size": len(data),
        "wheel": base64.b64encode(data).decode(),
    }
    return {**body, **changes}


def add_kiosks(db: Path | str, site: str, count: int, prefix: str = "SN") -> list[str]:
    """``count`` kiosks at ``site`` (registered in one transaction); their device ids."""
    rows = [
        (i + 1, registry.DeviceRow(f"{prefix}-{site}-{i:04d}", site, "gate-1"))
        for i in range(count)
    ]
    with connect(db) as conn, transaction(conn):
        report = registry.upsert_devices(conn, rows, create_sites=True)
    ids = [r.device_id for r in report.results]
    assert all(ids) and len(ids) == count
    return [str(i) for i in ids]


def tokens(db: Path | str, device_ids: list[str]) -> dict[str, dict[str, str]]:
    """A session header per kiosk."""
    with connect(db) as conn:
        return {d: {"Authorization": f"Bearer {mint_token(conn, d)}"} for d in device_ids}


async def beat(
    client: Client,
    headers: dict[str, str],
    version: str,
    update: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """One heartbeat running ``version`` (with an update report); the answer's offer."""
    body: dict[str, Any] = {"boot_id": "b1", "version": version}
    if update is not None:
        body["update"] = update
    resp = await client.post("/v1/heartbeat", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    offer = (await resp.json()).get("update")
    return offer if isinstance(offer, dict) else None


async def post_release(client: Client, admin: dict[str, str], body: dict[str, Any]) -> Any:
    """``POST /v1/admin/releases`` (a large body goes as a stream, as aiohttp wants it)."""
    data = io.BytesIO(json.dumps(body).encode())
    headers = {**admin, "Content-Type": "application/json"}
    return await client.post("/v1/admin/releases", data=data, headers=headers)
