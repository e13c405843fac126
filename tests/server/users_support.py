"""People in tests: make an account straight in the database, log it in over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from server.accounts import users
from server.accounts.passwords import hash_password
from server.fleet.sessions import now_iso, utc_now
from server.storage.db import connect, transaction

PASSWORD = "correct horse battery"
_HASH = hash_password(PASSWORD)  # argon2 once per test session, not per account
Client = TestClient[web.Request, web.Application]


def add_user(
    db_target: str | Path,
    username: str,
    role: str,
    sites: Iterable[str] = (),
    password: str = PASSWORD,
) -> None:
    """Create (or replace) an account; ``db_target`` is a SQLite path or a PostgreSQL URL."""
    hashed = _HASH if password == PASSWORD else hash_password(password)
    with connect(db_target) as conn, transaction(conn):
        users.save_user(conn, username, role, sites, hashed, now_iso(utc_now()))


async def token_for(client: Client, username: str, password: str = PASSWORD) -> str:
    """A bearer token from ``POST /v1/login``, waiting out the login rate limit as a client
    should (``429`` with ``Retry-After``): a set-up that logs in five users at once exceeds
    the default burst of four whenever argon2 runs fast enough (seen once in CI)."""
    for _attempt in range(5):
        resp = await client.post("/v1/login", json={"username": username, "password": password})
        if resp.status != 429:
            break
        await asyncio.sleep(min(float(resp.headers.get("Retry-After", "1")), 2.0))
    assert resp.status == 200, await resp.text()
    token = (await resp.json())["token"]
    assert isinstance(token, str)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
