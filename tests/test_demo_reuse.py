"""`kiosk demo --server-url … --bundle` refuses a kiosk with audit history (issue 10, part 3)."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from device.config import load_bundle
from provisioning.registry import add_device, write_bundle
from server.app import create_app
from server.config import ServerConfig
from siheyi.cli import local_fleet
from siheyi.demo import kiosk_with_history

from .server.conftest import bearer
from .server.test_audit import chain, post


async def test_a_fresh_kiosk_is_taken_one_with_history_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    server = TestServer(create_app(ServerConfig.default(database=db)))
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    issued = add_device(local_fleet(None, db), "SN-1", "site-a", server_url=url)
    path = tmp_path / "bundle.json"
    write_bundle(issued, path)
    bundle = load_bundle(path)
    client = TestClient(server)
    try:
        assert await kiosk_with_history(url, bundle, path) == ""
        await post(client, bearer(db, issued), chain(1, 3))
        refusal = await kiosk_with_history(url, bundle, path)
        assert "already has audit history" in refusal and "--reuse-kiosk" in refusal
    finally:
        await client.close()  # and the server with it
    gone = await kiosk_with_history(url, bundle, path)
    assert gone.startswith("cannot ask")
