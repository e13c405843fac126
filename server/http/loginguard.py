"""Admin login throttling per account and per source address, with exponential backoff.

A single login bucket for everyone let four password-guessing clients lock the real
administrator out (every login ``429``). Failures are now counted per key, where a key is
(account, source), the account over all sources, and the source over all accounts. After a
key's free failures each further one blocks it for 60 s, doubling up to an hour: a flood from
one address gets a few guesses per hour per account and is refused before any password work,
while every other address and account is untouched. The account's wide count holds back only
sources that already failed on it, and never one that logged in to it before: guessing from
many addresses cannot lock the administrator out, and costs the guesser one attempt per fresh
address (a second factor, ``POST /v1/admin/totp``, is the answer to that). A key without a
failure for a day is forgotten. The ``[limits] login_per_s`` bucket still bounds the argon2
work, taken only by attempts that pass the per-key checks (with ``--workers N`` each process
gets ``login_per_s / N``: server/http/workers.py).

A source is the TCP peer or, when that peer is a reverse proxy listed in ``[server]
trusted_proxies``, the client the proxy names in ``X-Forwarded-For``
(server/http/proxies.py); from anyone else that header is ignored.

The strikes live in the database (tables ``login_strikes`` and ``login_trusted``, migration
9), not in the process, so that every server process sees every failure: with N processes a
guesser must not get N times the guesses. Times there are wall-clock unix seconds (processes
share no monotonic clock); the clock is a parameter so that tests can move it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from server.config import LimitSettings
from server.http.buckets import TokenBucket
from server.storage.connection import Connection
from server.storage.db import Database, lock, transaction

BACKOFF_FIRST_S = 60.0
BACKOFF_MAX_S = 3600.0
#: A key without a failure for this long starts afresh.
FORGET_S = 24 * 3600.0


class LoginThrottle:
    """Decides whether a login attempt may be checked, and learns from its result.

    The per-key strikes are in the database (shared by every process); only the argon2
    bucket, a per-process budget by design, is held here.
    """

    def __init__(self, limits: LimitSettings, wall: Callable[[], float] = time.time) -> None:
        self._free = {"pair": limits.login_free_failures}
        self._free["account"] = self._free["source"] = limits.login_wide_free_failures
        self._bucket = TokenBucket(limits.login_per_s, max(1.0, limits.login_per_s * 2))
        self._wall = wall

    async def wait(self, db: Database, account: str, source: str) -> float:
        """Seconds until this attempt may be checked; 0.0: check it now."""
        blocked = await db.run(shared_blocked, _text(account), _text(source), self._wall())
        return blocked if blocked > 0 else self._bucket.take()

    async def failed(self, db: Database, account: str, source: str) -> None:
        """A wrong password or one-time code: one strike on every key of the attempt."""
        await db.run(shared_failed, self._free, _text(account), _text(source), self._wall())

    async def succeeded(self, db: Database, account: str, source: str) -> None:
        """A good login: this source's strikes on the account end, and it is trusted there."""
        await db.run(shared_succeeded, _text(account), _text(source), self._wall())


def _text(value: str) -> str:
    """A user name as a key: a JSON ``\\u0000`` is legal in it, but not in PostgreSQL text."""
    return value.replace("\x00", "\ufffd")


def _pair_key(account: str, source: str) -> str:
    """(account, source) as one unambiguous text without NUL (PostgreSQL text holds none)."""
    return f"{len(account)}:{account}{source}"


def _shared_keys(
    conn: Connection, account: str, source: str, failing: bool
) -> list[tuple[str, str]]:
    pair = ("pair", _pair_key(account, source))
    keys = [pair, ("source", source)]
    trusted = conn.execute(
        "SELECT 1 FROM login_trusted WHERE account = ? AND source = ?", (account, source)
    ).fetchone()
    if trusted is None and (failing or _strikes_row(conn, pair) is not None):
        keys.append(("account", account))
    return keys


def _strikes_row(conn: Connection, key: tuple[str, str]) -> tuple[int, float, float] | None:
    row = conn.execute(
        "SELECT failures, blocked_until, last_at FROM login_strikes WHERE kind = ? AND key = ?",
        key,
    ).fetchone()
    return (int(row[0]), float(row[1]), float(row[2])) if row is not None else None


def shared_blocked(conn: Connection, account: str, source: str, now: float) -> float:
    """Seconds this attempt is still blocked for, by the strikes in the database."""
    waits = [0.0]
    for key in _shared_keys(conn, account, source, False):
        row = _strikes_row(conn, key)
        if row is not None and now - row[2] <= FORGET_S:
            waits.append(row[1] - now)
    return max(waits)


def shared_failed(
    conn: Connection, free: dict[str, int], account: str, source: str, now: float
) -> None:
    """One strike on every key of the attempt; keys quiet for a day are forgotten."""
    with transaction(conn):
        lock(conn, "login_strikes")  # two processes counting one key's strikes at once
        conn.execute("DELETE FROM login_strikes WHERE last_at < ?", (now - FORGET_S,))
        for key in _shared_keys(conn, account, source, True):
            row = _strikes_row(conn, key)
            failures = (row[0] if row is not None else 0) + 1
            blocked = row[1] if row is not None else 0.0
            beyond = failures - free[key[0]]
            if beyond >= 0:
                blocked = now + min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0**beyond)
            conn.execute(
                "INSERT INTO login_strikes (kind, key, failures, blocked_until, last_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET"
                " failures = excluded.failures, blocked_until = excluded.blocked_until,"
                " last_at = excluded.last_at",
                (*key, failures, blocked, now),
            )


def shared_succeeded(conn: Connection, account: str, source: str, now: float) -> None:
    """A good login: the pair's strikes end, and the source is trusted on the account."""
    with transaction(conn):
        conn.execute(
            "DELETE FROM login_strikes WHERE kind = 'pair' AND key = ?",
            (_pair_key(account, source),),
        )
        conn.execute(
            "INSERT INTO login_trusted (account, source, at) VALUES (?, ?, ?)"
            " ON CONFLICT (account, source) DO UPDATE SET at = excluded.at",
            (account, source, now),
        )
