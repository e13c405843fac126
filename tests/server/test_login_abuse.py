"""Admin login under password guessing (issue 10, part 7): throttled per account and
source with backoff, the real administrator never locked out; optional TOTP second factor."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyotp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler

import server.accounts.passwords as passwords_module
from server.app import create_app
from server.config import LimitSettings, ServerConfig
from server.http.loginguard import FORGET_S, LoginThrottle
from server.storage.db import Database, connect, open_database

from .test_admin import PASSWORD, admin_db  # noqa: F401 - admin_db is a fixture

HOUR = 3600.0


class FakeClock:
    """The wall clock the throttle reads (unix seconds), moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    """The strikes' database, open (SQLite and PostgreSQL)."""
    database = open_database(db_path)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


async def guesses_in(
    throttles: list[LoginThrottle], db: Database, clock: FakeClock, seconds: float, source: str
) -> int:
    """Wrong passwords one client gets checked within ``seconds``, trying every second, each
    try sent to the next throttle (server process) in turn.

    A refused try changes nothing, so the clock jumps straight to the next second that the
    answer says can pass: the same count as trying every second, in far fewer queries.
    """
    checked = 0
    end = clock.now + seconds
    turn = 0
    while clock.now < end:
        throttle = throttles[turn % len(throttles)]
        turn += 1
        wait = await throttle.wait(db, "ops", source)
        if wait == 0:
            checked += 1
            await throttle.failed(db, "ops", source)
        clock.now = min(end, clock.now + max(1.0, math.ceil(wait)))
    return checked


async def test_one_source_gets_a_few_guesses_per_hour(db: Database) -> None:
    clock = FakeClock()
    throttle = [LoginThrottle(LimitSettings(login_per_s=1000), wall=clock)]
    first_hour = await guesses_in(throttle, db, clock, HOUR, "10.0.0.1")
    assert 3 <= first_hour <= 8
    assert await guesses_in(throttle, db, clock, 4 * HOUR, "10.0.0.1") <= 4  # then one an hour
    # another place is not held back by that flood, and the owner logs in
    assert await throttle[0].wait(db, "ops", "10.0.0.2") == 0
    await throttle[0].succeeded(db, "ops", "10.0.0.2")
    assert await throttle[0].wait(db, "ops", "10.0.0.2") == 0


async def test_many_sources_cannot_lock_out_a_known_machine(db: Database) -> None:
    clock = FakeClock()
    throttle = LoginThrottle(LimitSettings(login_per_s=1000), wall=clock)
    await throttle.succeeded(db, "ops", "10.9.9.9")  # the admin's own machine logged in before
    for n in range(40):
        await guesses_in([throttle], db, clock, 120, f"10.1.0.{n}")
    assert await throttle.wait(db, "ops", "10.9.9.9") == 0
    assert await throttle.wait(db, "ops", "10.1.0.3") > 0  # a source that failed stays held back
    assert await throttle.wait(db, "ops", "10.2.0.1") == 0  # a fresh address gets its one attempt


async def test_a_source_spraying_accounts_is_held_back(db: Database) -> None:
    throttle = LoginThrottle(LimitSettings(login_per_s=1000), wall=FakeClock())
    checked = 0
    for n in range(200):
        if await throttle.wait(db, f"user{n}", "10.0.0.7") == 0:
            checked += 1
            await throttle.failed(db, f"user{n}", "10.0.0.7")
    assert checked == LimitSettings().login_wide_free_failures


async def test_the_argon2_bucket_is_taken_only_past_the_per_key_checks(db: Database) -> None:
    """``login_per_s`` bounds the password work of the attempts that pass the strikes; an
    attempt refused by its strikes takes no token from the others."""
    limits = LimitSettings(login_per_s=0.1)  # a burst of one, then one per 10 s
    throttle = LoginThrottle(limits, wall=FakeClock())
    for _ in range(limits.login_free_failures):
        await throttle.failed(db, "ops", "10.0.0.1")
    assert await throttle.wait(db, "ops", "10.0.0.1") > 0  # blocked by its strikes
    assert await throttle.wait(db, "ops", "10.0.0.2") == 0  # the one token was still there
    assert 0 < await throttle.wait(db, "ops", "10.0.0.3") <= 10  # no strikes, no token


@web.middleware
async def fake_source(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Lets a test speak from several addresses (X-Test-Source)."""
    source = request.headers.get("X-Test-Source")
    return await handler(request.clone(remote=source) if source else request)


@pytest.fixture
async def server(aiohttp_client: Any, config: ServerConfig, admin_db: Path) -> TestClient:  # noqa: F811
    # the process-wide argon2 bucket out of the way: these tests are about the per-key throttle
    app = create_app(replace(config, limits=LimitSettings(login_per_s=1000)))
    app.middlewares.insert(0, fake_source)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def attempt(
    client: TestClient, password: str, source: str, totp: str | None = None
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"username": "ops", "password": password}
    if totp is not None:
        body["totp"] = totp
    resp = await client.post("/v1/admin/login", json=body, headers={"X-Test-Source": source})
    return resp.status, await resp.json()


async def test_four_guessing_clients_do_not_lock_out_the_admin(
    server: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = 0
    real = passwords_module.password_ok

    def counting(stored: str, password: str) -> bool:
        nonlocal checks
        checks += 1
        return real(stored, password)

    monkeypatch.setattr(passwords_module, "password_ok", counting)
    statuses = [
        (await attempt(server, f"guess-{n}", f"203.0.113.{client}"))[0]
        for n in range(25)
        for client in range(4)
    ]
    # three each would be 12: the account's wide count stops them at 10
    limits = LimitSettings()
    assert statuses.count(401) == min(
        4 * limits.login_free_failures, limits.login_wide_free_failures
    )
    assert statuses.count(429) == 100 - statuses.count(401)
    assert checks == statuses.count(401)  # refused before any argon2 work
    status, answer = await attempt(server, PASSWORD, "198.51.100.5")
    assert status == 200 and answer["token"]


async def test_totp_second_factor(server: TestClient) -> None:
    status, answer = await attempt(server, PASSWORD, "198.51.100.5")
    assert status == 200
    headers = {"Authorization": f"Bearer {answer['token']}"}
    begun = await (await server.post("/v1/admin/totp", headers=headers)).json()
    assert begun["uri"].startswith("otpauth://totp/") and "secret=" in begun["uri"]
    totp = pyotp.TOTP(begun["secret"])
    # pending until confirmed: a password alone still logs in
    assert (await attempt(server, PASSWORD, "198.51.100.5"))[0] == 200
    wrong = await server.post("/v1/admin/totp/confirm", json={"code": "000000"}, headers=headers)
    assert wrong.status == 400 or totp.now() == "000000"
    confirm = await server.post(
        "/v1/admin/totp/confirm", json={"code": totp.now()}, headers=headers
    )
    assert (await confirm.json()) == {"enabled": True}
    refused = await attempt(server, PASSWORD, "198.51.100.6")
    assert (
        refused[0] == 401 and refused[1]["detail"] == "wrong user name, password or one-time code"
    )
    assert (await attempt(server, "wrong password", "198.51.100.7", totp.now()))[0] == 401
    code = totp.now()
    assert (await attempt(server, PASSWORD, "198.51.100.8", code))[0] == 200
    assert (await attempt(server, PASSWORD, "198.51.100.9", code))[0] == 401  # used once
    assert (await attempt(server, PASSWORD, "198.51.100.5", "12345"))[0] == 400
    removed = await server.delete("/v1/admin/totp", headers=headers)
    assert (await removed.json()) == {"enabled": False}
    assert (await attempt(server, PASSWORD, "198.51.100.5"))[0] == 200


# --- strikes shared by several server processes (the database) ----------------------------


async def test_two_processes_give_a_guesser_no_more_guesses_than_one(db: Database) -> None:
    """Two throttles over one database are two server processes: a guesser alternating
    between them gets what one process gives (3 free failures, then 60 s doubling)."""
    clock = FakeClock()
    limits = LimitSettings(login_per_s=1000)
    one = [LoginThrottle(limits, wall=clock)]
    two = [LoginThrottle(limits, wall=clock), LoginThrottle(limits, wall=clock)]
    start = clock.now
    alone = await guesses_in(one, db, clock, HOUR, "10.0.0.1")
    await db.run(lambda conn: conn.execute("DELETE FROM login_strikes"))
    clock.now = start
    together = await guesses_in(two, db, clock, HOUR, "10.0.0.1")
    assert alone == together
    assert 3 <= together <= 8
    # the other process sees the block; another place and the owner are not held back
    assert await two[1].wait(db, "ops", "10.0.0.1") > 0
    assert await two[0].wait(db, "ops", "10.0.0.9") == 0
    await two[0].succeeded(db, "ops", "10.0.0.9")
    assert await two[1].wait(db, "ops", "10.0.0.9") == 0
    # a user name with a NUL (legal JSON) is a key like any other, on both backends
    await two[0].failed(db, "o\x00ps", "10.0.0.1")
    assert await two[1].wait(db, "o\x00ps", "10.0.0.5") == 0


async def test_strikes_are_forgotten_after_a_quiet_day(db: Database, db_path: Path) -> None:
    clock = FakeClock()
    throttle = LoginThrottle(LimitSettings(login_per_s=1000), wall=clock)
    for _ in range(5):
        await throttle.failed(db, "ops", "10.0.0.1")
    assert await throttle.wait(db, "ops", "10.0.0.1") > 0
    clock.now += FORGET_S + 1
    assert await throttle.wait(db, "ops", "10.0.0.1") == 0
    await throttle.failed(db, "ops", "10.0.0.2")  # purges the quiet keys
    with connect(db_path) as conn:
        keys = conn.execute("SELECT key FROM login_strikes ORDER BY key").fetchall()
    assert "10.0.0.1" not in [k[0] for k in keys]
