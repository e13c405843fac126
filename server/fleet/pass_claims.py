"""Pass nonces claimed at the server: a signed pass is accepted once in the whole fleet.

A kiosk checks a pass offline (core/passes.py) and, when the server is reachable, claims its
nonce here before opening (``POST /v1/passes/claim``). The claim lives in the shared
database, so a second claim through any server process, from any kiosk, is refused until the
pass expires; expired claims are purged. Offline, the kiosk's own memory is all there is
(docs/passes.md, "Replay across kiosks").
"""

from __future__ import annotations

import time

from core.passes import MAX_CLOCK_SKEW_S, MAX_VALIDITY_S
from server.storage.connection import Connection

#: Expired claims are purged at most this often per process (one indexed DELETE).
PURGE_EVERY_S = 60.0
#: A claim is kept at most this long: a kiosk whose clock runs ahead cannot pin a nonce
#: (or fill the table) for longer than a pass can live.
LONGEST_S = MAX_VALIDITY_S + MAX_CLOCK_SKEW_S

_next_purge = 0.0


def claim(conn: Connection, nonce: str, device_id: str, expires_at: int, now: int) -> bool:
    """Claim ``nonce`` for ``device_id``; False when it is already claimed and unexpired."""
    keep_until = min(expires_at, now + LONGEST_S)
    cur = conn.execute(
        "INSERT INTO pass_claims (nonce, device_id, claimed_at, expires_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (nonce) DO UPDATE SET device_id = excluded.device_id,"
        " claimed_at = excluded.claimed_at, expires_at = excluded.expires_at"
        " WHERE pass_claims.expires_at < excluded.claimed_at",
        (nonce, device_id, now, keep_until),
    )
    return cur.rowcount == 1


def purge(conn: Connection, now: int) -> int:
    """Delete claims of passes expired before ``now``; how many."""
    return conn.execute("DELETE FROM pass_claims WHERE expires_at < ?", (now,)).rowcount


def purge_due(monotonic: float | None = None) -> bool:
    """Whether this process should purge now (at most every :data:`PURGE_EVERY_S`)."""
    global _next_purge
    now = time.monotonic() if monotonic is None else monotonic
    if now < _next_purge:
        return False
    _next_purge = now + PURGE_EVERY_S
    return True


def claim_and_purge(
    conn: Connection, nonce: str, device_id: str, expires_at: int, now: int, purge_now: bool
) -> bool:
    """:func:`claim`, after purging expired claims when ``purge_now``."""
    if purge_now:
        purge(conn, now)
    return claim(conn, nonce, device_id, expires_at, now)
