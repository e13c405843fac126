"""Tap-id replay memory in the database (server/verify/replay.py) and the one-statement source
lookup: shared by two app instances on one database, expiring, purged in bounded batches."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from msgspec import structs

from provisioning.registry import DeviceBundle
from server.app import create_app
from server.appkeys import DATABASE, VERIFIER
from server.config import ServerConfig
from server.storage.db import Database, open_database
from server.verify.claims import SqliteClaims
from server.verify.replay import CLAIM_SQL, TapReplay, claim_taps, purge_expired
from server.verify.sources import PERSON_SQL

from .conftest import People


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(db_path: Path | str) -> AsyncIterator[Database]:
    database = open_database(db_path)
    await database.open()
    yield database
    await database.close()


def tap(tap_id: str, number: str = "11010519491231002X") -> dict[str, Any]:
    return {"tap_id": tap_id, "credential": {"kind": "id_card", "id_number": number}}


async def count_rows(db: Database) -> int:
    return int((await db.fetch("SELECT COUNT(*) FROM tap_replay"))[0][0])


async def test_a_tap_decided_by_one_app_is_refused_by_another(
    aiohttp_client: Any, config: ServerConfig, device: DeviceBundle, auth: dict[str, str]
) -> None:
    """Two apps on one database hold what two server processes hold: nothing shared but it."""
    first: TestClient = await aiohttp_client(create_app(config))
    second: TestClient = await aiohttp_client(create_app(config))
    tap_id = f"t-{uuid.uuid4().hex[:12]}"
    assert (await first.post("/v1/verify", json=tap(tap_id), headers=auth)).status == 200
    again = await second.post("/v1/verify", json=tap(tap_id), headers=auth)
    assert again.status == 409
    assert (await again.json())["error"] == "replay"
    other = f"t-{uuid.uuid4().hex[:12]}"
    assert (await second.post("/v1/verify", json=tap(other), headers=auth)).status == 200
    assert (await first.post("/v1/verify", json=tap(other), headers=auth)).status == 409


async def test_a_replay_seen_here_is_refused_before_any_work(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = client.app[VERIFIER]
    calls = 0
    real = verifier.verify

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(verifier, "verify", counting)
    assert (await client.post("/v1/verify", json=tap("t-here"), headers=auth)).status == 200
    assert (await client.post("/v1/verify", json=tap("t-here"), headers=auth)).status == 409
    assert calls == 1


async def test_a_claim_expires_after_the_ttl(db: Database) -> None:
    clock = Clock()
    replay = TapReplay(db, ttl_s=60, recent=16, clock=clock)
    assert await replay.claim("dev-1", "tap-1")
    assert replay.seen("dev-1", "tap-1")
    assert not await replay.claim("dev-1", "tap-1")
    assert await replay.claim("dev-2", "tap-1")  # tap ids are per device
    clock.now += 59
    assert not await replay.claim("dev-1", "tap-1")
    clock.now += 61
    assert not replay.seen("dev-1", "tap-1")
    assert await replay.claim("dev-1", "tap-1")  # expired: taken over, refused again after
    assert not await replay.claim("dev-1", "tap-1")
    await replay.close()


async def test_concurrent_claims_of_one_tap_let_one_through(db: Database) -> None:
    replay = TapReplay(db, ttl_s=60, recent=16)
    firsts = await asyncio.gather(*(replay.claim("dev-1", "twin") for _ in range(5)))
    assert sorted(firsts) == [False, False, False, False, True]
    others = await asyncio.gather(*(replay.claim("dev-1", f"tap-{i}") for i in range(20)))
    assert all(others)
    assert await count_rows(db) == 21
    if isinstance(replay.writer, SqliteClaims):
        assert replay.writer.inline_batches == 2  # each gather's claims shared a transaction
    await replay.close()


async def test_purge_removes_expired_claims_only_in_bounded_batches(db: Database) -> None:
    now = 1_800_000_000
    await db.run(claim_taps, [("dev-1", f"old-{i}") for i in range(7)], now, 60)
    await db.run(claim_taps, [("dev-1", f"new-{i}") for i in range(3)], now + 50, 60)
    later = now + 61  # the old ones expired, the new ones live
    assert await db.run(purge_expired, later, 4) == 4
    assert await count_rows(db) == 6
    clock = Clock()
    clock.now = later
    replay = TapReplay(db, ttl_s=60, recent=16, clock=clock)
    assert await replay.purge(limit=2) == 3
    assert await count_rows(db) == 3
    assert not await replay.claim("dev-1", "new-0")  # still live
    await replay.close()


async def test_one_statement_answers_the_four_local_sources(
    aiohttp_client: Any,
    config: ServerConfig,
    device: DeviceBundle,
    auth: dict[str, str],
    people: People,
) -> None:
    config = replace(config, identity=structs.replace(config.identity, status_sync_s=60))
    client: TestClient = await aiohttp_client(create_app(config))
    db = client.app[DATABASE]
    fetched: list[str] = []
    ran: list[str] = []
    real_fetch, real_run = db.fetch, db.run

    async def fetch(sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        fetched.append(sql)
        rows: list[Any] = await real_fetch(sql, parameters)
        return rows

    async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        ran.append(fn.__name__)
        return await real_run(fn, *args, **kwargs)

    warm = await client.post("/v1/verify", json=tap("t-warm", people.passing), headers=auth)
    assert warm.status == 200  # the device directory has read the device
    db.fetch, db.run = fetch, run
    resp = await client.post("/v1/verify", json=tap("t-counted", people.passing), headers=auth)
    assert resp.status == 200
    assert (await resp.json())["outcome"] == "pass"
    reads = [sql for sql in fetched if not sql.startswith(CLAIM_SQL)]
    assert reads == [PERSON_SQL]
    assert ran == []  # no hop to a database thread (the SQLite claim is written inline)


async def test_claims_wait_off_the_loop_while_another_writer_holds_sqlite(
    db: Database, db_path: Path | str
) -> None:
    """Another process's write transaction: the batch goes to the database thread, which
    waits for the lock there, and the claim still counts once."""
    if db.dialect != "sqlite":
        pytest.skip("SQLite's single write lock")
    other = sqlite3.connect(str(db_path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    replay = TapReplay(db, ttl_s=60, recent=16)
    pending = asyncio.ensure_future(replay.claim("dev-1", "locked-out"))
    await asyncio.sleep(0.2)
    assert not pending.done()  # waiting on the thread, while the loop runs this test
    other.execute("COMMIT")
    other.close()
    assert await pending
    assert isinstance(replay.writer, SqliteClaims)
    assert (replay.writer.inline_batches, replay.writer.thread_batches) == (0, 1)
    assert not await replay.claim("dev-1", "locked-out")
    assert replay.writer.inline_batches == 1
    await replay.close()
