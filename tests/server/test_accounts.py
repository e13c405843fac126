"""People: roles, login, site scope, board sessions with CSRF, and the account verbs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.accounts import cli as accounts_cli
from server.accounts import users, websession
from server.app import OPERATIONS, create_app
from server.config import ServerConfig
from server.fleet.sessions import now_iso, utc_now
from server.storage.db import connect, transaction

from .users_support import PASSWORD, Client, add_user, bearer, token_for


@pytest.fixture
async def client(aiohttp_client: Any, db_path: Path, config: ServerConfig) -> Client:
    add_user(db_path, "root", "admin")
    add_user(db_path, "gina", "guard", ["north", "east"])
    add_user(db_path, "otto", "auditor")
    return await aiohttp_client(create_app(config))  # type: ignore[no-any-return]


async def test_login_answers_role_and_sites(client: Client) -> None:
    resp = await client.post("/v1/login", json={"username": "gina", "password": PASSWORD})
    body = await resp.json()
    assert resp.status == 200
    assert body["role"] == "guard" and body["sites"] == ["east", "north"]
    assert body["token"] and body["expires_at"]
    wrong = await client.post("/v1/login", json={"username": "gina", "password": "x" * 12})
    nobody = await client.post("/v1/login", json={"username": "who", "password": PASSWORD})
    assert wrong.status == nobody.status == 401
    assert (await wrong.json())["detail"] == (await nobody.json())["detail"]


async def test_repeated_failures_lock_the_account_for_that_source(client: Client) -> None:
    statuses = []
    for _ in range(12):
        resp = await client.post("/v1/login", json={"username": "gina", "password": "w" * 12})
        statuses.append(resp.status)
    assert 429 in statuses
    # Locked out: even the right password is refused (before any argon2 work) for now.
    resp = await client.post("/v1/login", json={"username": "gina", "password": PASSWORD})
    assert resp.status == 429 and "Retry-After" in resp.headers


@pytest.mark.parametrize("who", ["gina", "otto"])
async def test_only_admins_reach_the_admin_api(client: Client, who: str) -> None:
    token = await token_for(client, who)
    resp = await client.get("/v1/admin/devices", headers=bearer(token))
    assert resp.status == 403 and (await resp.json())["error"] == "forbidden"
    admin = await token_for(client, "root")
    assert (await client.get("/v1/admin/devices", headers=bearer(admin))).status == 200


async def test_every_admin_route_refuses_guards_and_auditors(client: Client) -> None:
    """Not only /v1/admin/devices: the event stream of every site, the audit alerts, the
    accounts… each admin route is a 403 for the other roles, before anything is done."""
    routes = [op for op in OPERATIONS if op.path.startswith("/v1/admin/") and op.auth == "admin"]
    assert len(routes) > 10
    for who in ("gina", "otto"):
        token = bearer(await token_for(client, who))
        for op in routes:
            path = re.sub(r"\{[^}]+\}", "x", op.path)
            resp = await client.request(op.method, path, headers=token, json={})
            assert resp.status == 403, (who, op.method, op.path, resp.status)


async def test_admin_api_manages_accounts_and_a_change_ends_sessions(client: Client) -> None:
    admin = bearer(await token_for(client, "root"))
    body = {"username": "gus", "role": "guard", "password": PASSWORD, "sites": ["west"]}
    resp = await client.post("/v1/admin/users", json=body, headers=admin)
    assert resp.status == 200 and (await resp.json())["sites"] == ["west"]
    gus = bearer(await token_for(client, "gus"))
    assert (await client.get("/v1/admin/users", headers=admin)).status == 200
    moved = {**body, "sites": ["north"]}
    assert (await client.post("/v1/admin/users", json=moved, headers=admin)).status == 200
    # The token issued for "west" no longer works once the guard is moved.
    assert (await client.get("/v1/guard/alerts", headers=gus)).status == 401
    bad = {**body, "sites": []}
    resp = await client.post("/v1/admin/users", json=bad, headers=admin)
    assert resp.status == 400 and "site" in (await resp.json())["detail"]
    assert "--" not in (await resp.json())["detail"]  # API answers name no CLI option
    assert (await client.delete("/v1/admin/users/gus", headers=admin)).status == 200
    assert (await client.delete("/v1/admin/users/gus", headers=admin)).status == 404
    assert (await client.delete("/v1/admin/users/root", headers=admin)).status == 409


def _session(db_path: Path, username: str) -> str:
    token = "s-" + username + "-0123456789abcdef0123456789abcdef"
    with connect(db_path) as conn, transaction(conn):
        users.store_token(
            conn,
            websession.token_hash(token),
            username,
            "2999-01-01T00:00:00+00:00",
            now_iso(utc_now()),
            "session",
        )
    return token


@pytest.mark.parametrize(
    ("role", "sites"), [("guard", []), ("admin", ["north"]), ("auditor", ["north"])]
)
async def test_site_refusals_name_the_api_field_words_not_cli_options(
    client: Client, role: str, sites: list[str]
) -> None:
    """The same refusal serves ``POST /v1/admin/users`` and ``kiosk server user add``: the
    API's words are neutral, the command line's name ``--site``."""
    admin = bearer(await token_for(client, "root"))
    body = {"username": "gus", "role": role, "password": PASSWORD, "sites": sites}
    resp = await client.post("/v1/admin/users", json=body, headers=admin)
    detail = (await resp.json())["detail"]
    assert resp.status == 400 and "site" in detail and "--" not in detail and "(" not in detail
    with pytest.raises(users.AccountError) as refused:
        users.check_account("gus", role, sites)
    assert "--site" in accounts_cli.cli_words(str(refused.value))


async def test_cookie_changes_need_the_csrf_token(client: Client, db_path: Path) -> None:
    token = _session(db_path, "root")
    cookies = {websession.COOKIE: token}
    body = {"username": "gus", "role": "auditor", "password": PASSWORD}
    # Reading with the cookie needs no CSRF token.
    client.session.cookie_jar.update_cookies(cookies)
    assert (await client.get("/v1/admin/users")).status == 200
    refused = await client.post("/v1/admin/users", json=body)
    assert refused.status == 403 and (await refused.json())["error"] == "csrf"
    forged = await client.post("/v1/admin/users", json=body, headers={"X-CSRF-Token": "0" * 40})
    assert forged.status == 403
    good = {"X-CSRF-Token": websession.csrf_token(token)}
    assert (await client.post("/v1/admin/users", json=body, headers=good)).status == 200


async def test_no_token_is_a_401_for_people_routes(client: Client) -> None:
    for path in ("/v1/admin/users", "/v1/guard/alerts", "/v1/audit/events"):
        resp = await client.get(path)
        assert resp.status == 401, path


def test_user_verbs(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")

    def kiosk(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "siheyi.cli", "server", "user", *args, "--database", str(db)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    made = kiosk("add", "gina", "--role", "guard", "--site", "north", "--password-file", str(pw))
    assert made.returncode == 0, made.stderr
    no_site = kiosk("add", "gus", "--role", "guard", "--password-file", str(pw))
    assert no_site.returncode == 1 and "--site" in no_site.stderr, no_site.stderr
    sited = kiosk("add", "al", "--role", "admin", "--site", "n", "--password-file", str(pw))
    assert sited.returncode == 1 and "--site is for guards only" in sited.stderr, sited.stderr
    listed = kiosk("list")
    assert "gina" in listed.stdout and "north" in listed.stdout
    assert kiosk("remove", "gina").returncode == 0
    assert kiosk("remove", "gina").returncode == 1


async def test_board_answers_carry_a_strict_csp(client: Client) -> None:
    resp = await client.get("/board/no-such-page")
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" not in (await client.get("/healthz")).headers
