"""Accounts in the database: who exists, their role, and the sites a guard watches.

The CLI (``kiosk server user …``) and the admin API (``/v1/admin/users``) run these same
functions, so an account made either way is the same row. Passwords arrive hashed
(argon2id, :func:`server.fleet.admin.hash_password`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from server.accounts.principal import ROLES, Principal, Role, Via
from server.storage.connection import Connection

USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
SITE = re.compile(r"[^\s/]{1,64}")


#: Refusals about sites, worded for every caller (API field ``sites``, option ``--site``):
#: ``server.accounts.cli`` turns them into the command line's words.
GUARD_NEEDS_SITE = "a guard needs at least one site"
SITES_ARE_FOR_GUARDS = "only a guard is given sites"


class AccountError(ValueError):
    """A refused account change: a bad name, role or site, or an unknown account."""


@dataclass(frozen=True)
class Account:
    username: str
    role: Role
    sites: tuple[str, ...]
    created_at: str


def check_account(username: str, role: str, sites: Iterable[str]) -> tuple[Role, list[str]]:
    """The role and sorted, de-duplicated sites, or an :class:`AccountError` saying why."""
    if USERNAME.fullmatch(username) is None:
        raise AccountError("user name: 1-64 of A-Z a-z 0-9 _ . @ -")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    wanted = sorted(set(sites))
    for site in wanted:
        if SITE.fullmatch(site) is None:
            raise AccountError(f"site {site[:64]!r}: 1-64 characters, no spaces or '/'")
    if role == "guard" and not wanted:
        raise AccountError(GUARD_NEEDS_SITE)
    if role != "guard" and wanted:
        raise AccountError(f"an {role} sees every site: {SITES_ARE_FOR_GUARDS}")
    return role, wanted


def save_user(
    conn: Connection, username: str, role: str, sites: Iterable[str], password_hash: str, now: str
) -> None:
    """Create an account, or replace an existing one's role, sites and password.

    A changed account loses its open sessions: a guard moved off a site must not keep
    watching it through a token issued before the move."""
    checked_role, checked_sites = check_account(username, role, sites)
    conn.execute(
        "INSERT INTO admins (username, password_hash, role, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash,"
        " role = excluded.role",
        (username, password_hash, checked_role, now),
    )
    conn.execute("DELETE FROM user_sites WHERE username = ?", (username,))
    for site in checked_sites:
        conn.execute("INSERT INTO user_sites (username, site) VALUES (?, ?)", (username, site))
    conn.execute("DELETE FROM admin_tokens WHERE username = ?", (username,))


def remove_user(conn: Connection, username: str) -> None:
    """Delete an account with its sites and sessions; :class:`AccountError` if unknown."""
    cur = conn.execute("DELETE FROM admins WHERE username = ?", (username,))
    if cur.rowcount != 1:
        raise AccountError(f"no such user {username[:64]!r}")
    conn.execute("DELETE FROM user_sites WHERE username = ?", (username,))
    conn.execute("DELETE FROM admin_tokens WHERE username = ?", (username,))


def list_users(conn: Connection) -> list[Account]:
    """Every account, by name."""
    sites: dict[str, list[str]] = {}
    for name, site in conn.execute("SELECT username, site FROM user_sites ORDER BY site"):
        sites.setdefault(str(name), []).append(str(site))
    rows = conn.execute("SELECT username, role, created_at FROM admins ORDER BY username")
    return [
        Account(str(n), cast(Role, r), tuple(sites.get(str(n), ())), str(c)) for n, r, c in rows
    ]


def principal_for_token(
    conn: Connection, token_hash: str, now: str, via: Via = "bearer"
) -> Principal | None:
    """The person a live token belongs to (one indexed read and the guard's sites); ``via``
    is how the request carried the token, which decides whether CSRF applies."""
    row = conn.execute(
        "SELECT a.username, a.role FROM admin_tokens t"
        " JOIN admins a ON a.username = t.username"
        " WHERE t.token_hash = ? AND t.expires_at > ?",
        (token_hash, now),
    ).fetchone()
    if row is None:
        return None
    username, role = str(row[0]), str(row[1])
    sites = conn.execute("SELECT site FROM user_sites WHERE username = ?", (username,))
    return Principal(username, cast(Role, role), frozenset(str(s) for (s,) in sites), via)


def store_token(
    conn: Connection, token_hash: str, username: str, expires_at: str, now: str, kind: str
) -> None:
    """Keep a new token's hash (``kind``: ``bearer`` or ``session``); expired ones go."""
    conn.execute("DELETE FROM admin_tokens WHERE expires_at < ?", (now,))
    conn.execute(
        "INSERT INTO admin_tokens (token_hash, username, expires_at, kind) VALUES (?, ?, ?, ?)",
        (token_hash, username, expires_at, kind),
    )


def drop_token(conn: Connection, token_hash: str) -> None:
    """Log out: the token stops working at once, in every process."""
    conn.execute("DELETE FROM admin_tokens WHERE token_hash = ?", (token_hash,))


def role_and_sites(conn: Connection, username: str) -> tuple[Role, tuple[str, ...]] | None:
    row = conn.execute("SELECT role FROM admins WHERE username = ?", (username,)).fetchone()
    if row is None:
        return None
    sites = conn.execute(
        "SELECT site FROM user_sites WHERE username = ? ORDER BY site", (username,)
    )
    return cast(Role, str(row[0])), tuple(str(s) for (s,) in sites)
