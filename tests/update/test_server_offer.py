"""The kiosk side against the real server side: a published, rolled-out release is offered
in the heartbeat answer, streamed with the kiosk's session, verified against the pinned key
and switched to; the kiosk's reports are accepted by the server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from device.link.client import ServerClient
from device.update.settings import UpdateSettings
from device.update.updater import Updater
from server.fleet.sessions import mint_token
from server.storage.db import connect
from tests.releases.conftest import admin, client, config
from tests.releases.support import (
    PUBLIC_HEX,
    Client,
    add_kiosks,
    make_wheel,
    post_release,
    upload_body,
)
from tests.update.fakes import FakeBuilder, install_first, running

__all__ = ["admin", "client", "config"]  # fixtures


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "siheyi.db"


async def test_a_rolled_out_release_reaches_the_kiosk_and_is_switched_to(
    client: Client, admin: dict[str, str], db_path: Path, tmp_path: Path
) -> None:
    data = make_wheel(tmp_path, "2.0").read_bytes()
    assert (await post_release(client, admin, upload_body("2.0", data))).status == 200
    kiosk = add_kiosks(db_path, "site-a", 1)[0]
    rollout = {"version": "2.0", "scope": "site", "target": "site-a", "waves": [100]}
    assert (await client.post("/v1/admin/rollouts", json=rollout, headers=admin)).status in (
        200,
        201,
    )
    with connect(db_path) as conn:
        token = mint_token(conn, kiosk)
    root = tmp_path / "opt"
    install_first(root, "1.0")
    settings = UpdateSettings(
        release_key=PUBLIC_HEX, root=str(root), state_dir=str(tmp_path / "var"), idle_s=0
    )
    async with ServerClient(str(client.make_url("")).rstrip("/"), token=token) as kiosk_client:
        up = Updater(
            settings, kiosk_client, running_version="1.0", builder=FakeBuilder(version="2.0")
        )
        up.idle_for = lambda: 100.0
        kiosk_client.on_update = up.offer
        task = asyncio.create_task(up.run())
        await kiosk_client.heartbeat({"boot_id": "b1", "version": "1.0"})
        await asyncio.wait_for(up.exit_requested.wait(), 20)
        await task
        assert running(root) == "2.0"
        report: Any = msgspec.to_builtins(up.report())
        assert report["state"] == "trial"
        await kiosk_client.heartbeat({"boot_id": "b2", "version": "1.0", "update": report})
