"""The people behind bench/board_fanout.py's boards: guards spread over the sites, admins.

Accounts are made in the database with the server's own functions
(``server.accounts.users.save_user``); their bearer tokens are minted the way ``POST
/v1/login`` stores them (``users.store_token`` of the token's SHA-256), because the real
login costs argon2 and is throttled to ``[limits] login_per_s`` (2/s) for the whole server.
:func:`real_logins` then logs a few of them in over HTTP, whose tokens replace the minted.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import timedelta

from server.accounts import users
from server.accounts.passwords import hash_password
from server.accounts.websession import token_hash
from server.fleet.sessions import now_iso, utc_now
from server.storage.db import connect, transaction

PASSWORD = "board fanout bench"
TOKEN_TTL = timedelta(hours=6)


@dataclass(frozen=True)
class Board:
    """One open board: who watches, which sites (``None``: every site), with what token."""

    username: str
    role: str
    sites: frozenset[str] | None
    token: str

    def sees(self, site: str) -> bool:
        return self.sites is None or site in self.sites


def site_name(n: int) -> str:
    """The sites bench/fleetload_setup.py registers kiosks in."""
    return f"site-{n:02d}"


def plan_boards(count: int, admins: int, sites: int) -> list[tuple[str, str, list[str]]]:
    """(username, role, sites): ``count - admins`` guards round-robin over the sites, then
    the admins."""
    admins = min(admins, count)
    guards = [(f"guard{g:03d}", "guard", [site_name(g % sites)]) for g in range(count - admins)]
    return guards + [(f"admin{a:02d}", "admin", []) for a in range(admins)]


def make_boards(database: str, count: int, admins: int, sites: int) -> list[Board]:
    """The accounts, each with a minted bearer token."""
    hashed = hash_password(PASSWORD)
    now = utc_now()
    expires = now_iso(now + TOKEN_TTL)
    boards: list[Board] = []
    with connect(database) as conn, transaction(conn):
        for username, role, where in plan_boards(count, admins, sites):
            users.save_user(conn, username, role, where, hashed, now_iso(now))
            token = secrets.token_urlsafe(32)
            users.store_token(conn, token_hash(token), username, expires, now_iso(now), "bearer")
            boards.append(Board(username, role, frozenset(where) if where else None, token))
    return boards


def real_logins(url: str, boards: list[Board], count: int) -> None:
    """``POST /v1/login`` for the first ``count`` boards (waiting out the throttle)."""
    for n in range(min(count, len(boards))):
        boards[n] = replace(boards[n], token=login(url, boards[n].username))


def login(url: str, username: str, attempts: int = 10) -> str:
    body = json.dumps({"username": username, "password": PASSWORD}).encode()
    for _ in range(attempts):
        request = urllib.request.Request(
            url + "/v1/login", body, {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return str(json.loads(resp.read())["token"])
        except urllib.error.HTTPError as exc:
            if exc.code != 429:
                raise
            time.sleep(float(exc.headers.get("Retry-After", "1")))
    raise SystemExit(f"login of {username} throttled {attempts} times")
