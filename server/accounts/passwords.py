"""Passwords and second factors of every account (admin, guard, auditor).

argon2id hashes (each with its own salt and parameters); a check of an unknown account
still costs one argon2 verification against :data:`DUMMY_HASH`, so timing does not tell
whether a name exists. TOTP secrets live in ``server_secrets`` (no schema change): an
account's secret, one being enrolled, and the time step of its last accepted code.
"""

from __future__ import annotations

from datetime import timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from server.fleet.sessions import now_iso, utc_now
from server.storage.connection import Connection
from server.storage.db import transaction

#: ``server_secrets`` names (no schema change): an account's TOTP secret, one being enrolled,
#: and the time step of its last accepted code.
TOTP, TOTP_PENDING, TOTP_USED = "totp:", "totp-pending:", "totp-used:"
_hasher = PasswordHasher()
DUMMY_HASH = _hasher.hash("no such administrator")


def hash_password(password: str) -> str:
    """An argon2id hash (with its own salt and parameters) of ``password``."""
    if len(password) < 10:
        raise ValueError("an admin password needs at least 10 characters")
    return _hasher.hash(password)


def password_ok(stored: str, password: str) -> bool:
    """Constant-work check of ``password`` against an argon2 hash."""
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def stored_hash(conn: Connection, username: str) -> str | None:
    row = conn.execute(
        "SELECT password_hash FROM admins WHERE username = ?", (username,)
    ).fetchone()
    return str(row[0]) if row else None


def login_facts(conn: Connection, username: str) -> tuple[str | None, str | None]:
    """The account's password hash and TOTP secret (None: no such account / no second factor)."""
    return stored_hash(conn, username), get_secret(conn, f"{TOTP}{username}")


def get_secret(conn: Connection, name: str) -> str | None:
    row = conn.execute("SELECT secret FROM server_secrets WHERE name = ?", (name,)).fetchone()
    return str(row[0]) if row else None


def put_secret(conn: Connection, name: str, secret: str | None) -> None:
    if secret is None:
        conn.execute("DELETE FROM server_secrets WHERE name = ?", (name,))
        return
    conn.execute(
        "INSERT INTO server_secrets (name, secret, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET secret = excluded.secret",
        (name, secret, now_iso(utc_now())),
    )


def use_code(conn: Connection, username: str, secret: str, code: str | None) -> bool:
    """Whether ``code`` is the account's current one-time code (±30 s) and not used before:
    the time step of the last good code is kept, so a code seen once cannot log in again."""
    if code is None:
        return False
    totp = pyotp.TOTP(secret)
    now = utc_now()
    steps = [s for s in (-1, 0, 1) if totp.verify(code, for_time=now + timedelta(seconds=30 * s))]
    if not steps:
        return False
    step = totp.timecode(now) + steps[0]
    with transaction(conn):
        last = get_secret(conn, f"{TOTP_USED}{username}")
        if last is not None and int(last) >= step:
            return False
        put_secret(conn, f"{TOTP_USED}{username}", str(step))
    return True
