"""The board shows the software versions per site and the rollout each site follows, on the
site sections and on the list of sites of a fleet too big for one page."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from core.wire_releases import ReleaseUpload, RolloutRequest
from server.board import pages
from server.releases import rollouts, store
from server.storage.db import connect, transaction
from tests.board.support import board_app
from tests.releases.support import Client, add_kiosks, beat, tokens, upload_body
from tests.server.users_support import PASSWORD, add_user


def _roll(db: Path | str, version: str, **request: Any) -> int:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    upload = msgspec.convert(upload_body(version, version.encode()), ReleaseUpload)
    with connect(db) as conn, transaction(conn):
        store.publish(conn, upload, "ops", now)
        return rollouts.start(conn, RolloutRequest(version, **request), "ops", now).id


@pytest.fixture
async def board(aiohttp_client: Any, db_path: Path | str) -> Client:
    a = add_kiosks(db_path, "site-a", 3)
    b = add_kiosks(db_path, "site-b", 1)
    add_user(db_path, "boss", "admin")
    client: Client = await aiohttp_client(board_app(db_path))
    auth = tokens(db_path, a + b)
    for device_id, version in zip(a + b, ["1.5.0", "1.5.0", "1.4.2", "1.4.2"], strict=True):
        await beat(client, auth[device_id], version)
    resp = await client.post("/board/login", data={"username": "boss", "password": PASSWORD})
    assert resp.status == 200
    return client


async def test_site_sections_show_versions_and_rollout(board: Client, db_path: Path | str) -> None:
    fleet = _roll(db_path, "1.4.2", waves=[100])
    site = _roll(db_path, "1.5.0", scope="site", target="site-a", waves=[10, 100])
    page = await (await board.get("/board/?lang=en")).text()
    a = page[page.index('data-versions="site-a"') :].split("</p>")[0]
    assert "1.5.0 ×2 · 1.4.2 ×1" in a
    assert f"Rollout #{site} 1.5.0" in a and "running" in a and "(wave 1/2)" in a
    b = page[page.index('data-versions="site-b"') :].split("</p>")[0]
    assert "1.4.2 ×1" in b and f"Rollout #{fleet} 1.4.2" in b


async def test_the_list_of_sites_shows_versions_too(
    board: Client, db_path: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "MAX_CARDS", 2)
    site = _roll(db_path, "1.5.0", scope="site", target="site-a", waves=[100])
    with connect(db_path) as conn, transaction(conn):
        rollouts.move(conn, site, "halt", "2026-11-28T00:00:00+00:00")
    page = await (await board.get("/board/?lang=en")).text()
    assert "SN-site-a-0000" not in page  # the list of sites, not the cards
    a = page[page.index('data-versions="site-a"') :].split("</p>")[0]
    assert "1.5.0 ×2 · 1.4.2 ×1" in a and "halted" in a
    b = page[page.index('data-versions="site-b"') :].split("</p>")[0]
    assert "1.4.2 ×1" in b and "Rollout" not in b
