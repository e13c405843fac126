"""Device sessions: challenge nonces, session tokens, cached device state.

How it scales to several server processes (docs/identity.md):

* **Tokens are stateless**: ``s1.<device_id>.<key_epoch>.<expires>.<mac>``, the MAC being
  HMAC-SHA256 under a secret kept in the shared database (``server_secrets``). Any process
  checks any token with one HMAC (~1 µs), never a signature and never a database read.
  A revoked or quarantined kiosk gets an **audit-only** token instead (prefix ``a1``, same
  form, the prefix under the MAC): the auth middleware honours it for ``POST /v1/audit``
  alone, so the kiosk can still hand in what it saw (issue 10, part 2).
* **Device state is cached per process** (status, key epoch, placement) and refreshed from the
  fleet-wide ``devices.change_seq`` at most every ``[identity] status_sync_s`` (default 1 s):
  one indexed query per interval, whatever the load. A change made through this process's
  admin API invalidates its cache at once; a change made elsewhere (another process, the
  provisioning CLI) is seen within ``status_sync_s``. ``status_sync_s = 0`` reads the device
  row on every request instead.
* **Nonces** live in the database (``session_nonces``), single use across all processes.
* **Tap ids** live in the database too (``tap_replay``, server/verify/replay.py), claimed once
  across all processes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from server.fleet.devices import Device
from server.storage.connection import Connection
from server.storage.db import Database

log = logging.getLogger(__name__)

TOKEN_PREFIX = "s1"
#: Prefix of audit-only tokens (revoked and quarantined kiosks): ``POST /v1/audit`` alone.
AUDIT_TOKEN_PREFIX = "a1"
SESSION_SECRET = "session_hmac"
_MAC_BYTES = 24


def utc_now() -> datetime:
    """The identity clock: real UTC time, independent of the app's (injectable) domain clock.

    Session tokens, nonces and admin tokens expire by it; tests patch it to travel in time.
    """
    return datetime.now(UTC)


def now_iso(now: datetime) -> str:
    """UTC ISO 8601 to the second (the schema's timestamp form)."""
    return now.astimezone(UTC).isoformat(timespec="seconds")


def session_secret(conn: Connection) -> bytes:
    """The HMAC key of session tokens (32 random bytes), created on first use by any process."""
    conn.execute(
        "INSERT INTO server_secrets (name, secret, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        (SESSION_SECRET, secrets.token_hex(32), now_iso(datetime.now(UTC))),
    )
    row = conn.execute(
        "SELECT secret FROM server_secrets WHERE name = ?", (SESSION_SECRET,)
    ).fetchone()
    return bytes.fromhex(row[0])


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says: whose it is, under which key epoch, until when (unix s), and
    whether it is good for ``POST /v1/audit`` only."""

    device_id: str
    epoch: int
    expires: int
    audit_only: bool = False


#: Authentic tokens whose claims :meth:`TokenCodec.check` remembers (a kiosk sends the same
#: token for its whole session): beyond this many the memory starts again.
CHECKED_TOKENS = 65536


class TokenCodec:
    """Issues and checks session tokens with one HMAC key.

    A token once found authentic is remembered with its claims, so a kiosk's later requests
    cost a dictionary lookup instead of an HMAC (a few percent of a verify). Only authentic
    tokens are kept: forged ones cannot fill the memory, and expiry is checked by the caller
    on every request anyway.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._checked: dict[str, TokenClaims] = {}

    def __repr__(self) -> str:
        return "TokenCodec(<secret>)"

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, device_id: str, epoch: int, expires: int, *, audit_only: bool = False) -> str:
        prefix = AUDIT_TOKEN_PREFIX if audit_only else TOKEN_PREFIX
        body = f"{prefix}.{device_id}.{epoch}.{expires}"
        return f"{body}.{self._mac(body)}"

    def check(self, token: str) -> TokenClaims | None:
        """The claims of an authentic token (expired or not); None when forged or garbled."""
        claims = self._checked.get(token)
        if claims is None:
            claims = self._verify(token)
            if claims is not None:
                if len(self._checked) >= CHECKED_TOKENS:
                    self._checked.clear()
                self._checked[token] = claims
        return claims

    def _verify(self, token: str) -> TokenClaims | None:
        parts = token.split(".")
        if len(parts) != 5 or parts[0] not in (TOKEN_PREFIX, AUDIT_TOKEN_PREFIX):
            return None
        prefix, device_id, epoch, expires, mac = parts
        if not (epoch.isdigit() and expires.isdigit() and 0 < len(device_id) <= 64):
            return None
        if not hmac.compare_digest(self._mac(f"{prefix}.{device_id}.{epoch}.{expires}"), mac):
            return None
        return TokenClaims(device_id, int(epoch), int(expires), prefix == AUDIT_TOKEN_PREFIX)


@dataclass(frozen=True)
class DeviceState:
    """What the server needs per request about a device, cached per process."""

    device: Device
    public_key: str | None
    key_epoch: int
    rotate_pending: bool

    @property
    def status(self) -> str:
        return self.device.status


_STATE_COLUMNS = (
    "device_id, serial, site, gate, location, status, public_key, key_epoch, rotate_pending"
)


def _state(row: tuple[object, ...]) -> DeviceState:
    return DeviceState(
        Device(*(str(v) for v in row[:6])),
        str(row[6]) if row[6] is not None else None,
        int(row[7]),  # type: ignore[call-overload]
        bool(row[8]),
    )


#: One device's state by its id.
_STATE_SQL = f"SELECT {_STATE_COLUMNS} FROM devices WHERE device_id = ?"


def load_state(conn: Connection, device_id: str) -> DeviceState | None:
    """One device's state from the database; None when unknown."""
    row = conn.execute(_STATE_SQL, (device_id,)).fetchone()
    return _state(row) if row is not None else None


class DeviceDirectory:
    """Per-process cache of device states, refreshed from ``devices.change_seq``."""

    def __init__(self, db: Database, sync_s: float) -> None:
        self._db = db
        self._sync_s = sync_s
        self._states: dict[str, DeviceState] = {}
        self._seq = -1
        self._synced_at = float("-inf")
        self._sync_task: asyncio.Task[None] | None = None

    async def get(self, device_id: str) -> DeviceState | None:
        """The device's state, never older than ``status_sync_s``; None when unknown."""
        if self._sync_s <= 0:
            return await self._read_state(device_id)
        if time.monotonic() - self._synced_at >= self._sync_s:
            await self._sync()
        state = self._states.get(device_id)
        if state is None:
            state = await self._read_state(device_id)
            if state is not None:
                self._states[device_id] = state
        return state

    # Reads go through Database.fetch (inline on SQLite, the asyncio pool on PostgreSQL): on
    # the database thread they queued behind audit commits, and every request of a kiosk
    # waited whenever a sync fell due (bench/fleet_load.py profile, 1,200 kiosks).
    async def _read_state(self, device_id: str) -> DeviceState | None:
        rows = await self._db.fetch(_STATE_SQL, (device_id,))
        return _state(rows[0]) if rows else None

    async def _read_changes(self, seq: int) -> tuple[int, list[DeviceState]]:
        rows = await self._db.fetch("SELECT COALESCE(MAX(change_seq), 0) FROM devices")
        latest = int(rows[0][0])
        if seq < 0 or latest == seq:
            return latest, []
        sql = f"SELECT {_STATE_COLUMNS} FROM devices WHERE change_seq > ?"
        return latest, [_state(r) for r in await self._db.fetch(sql, (seq,))]

    def invalidate(self, device_id: str | None = None) -> None:
        """Forget one device (or all): its next request reads the database."""
        if device_id is None:
            self._states.clear()
        else:
            self._states.pop(device_id, None)
        self._synced_at = float("-inf")

    async def _sync(self) -> None:
        if self._sync_task is None:
            self._sync_task = asyncio.ensure_future(self._run_sync())
        task = self._sync_task
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._sync_task is task:
                self._sync_task = None

    async def _run_sync(self) -> None:
        started = time.monotonic()
        latest, changed = await self._read_changes(self._seq)
        for state in changed:
            if state.device.device_id in self._states:
                self._states[state.device.device_id] = state
        self._seq = latest
        self._synced_at = started


# --- nonces ------------------------------------------------------------------------------


def issue_nonce(conn: Connection, device_id: str, ttl_s: float, now: datetime) -> str:
    """A fresh single-use challenge for ``device_id``; expired nonces are purged on the way."""
    conn.execute(
        "DELETE FROM session_nonces WHERE expires_at < ?",
        (now_iso(now - timedelta(seconds=ttl_s)),),
    )
    nonce = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO session_nonces (nonce, device_id, expires_at) VALUES (?, ?, ?)",
        (nonce, device_id, now_iso(now + timedelta(seconds=ttl_s))),
    )
    return nonce


def nonce_status(conn: Connection, nonce: str, device_id: str, now: datetime) -> str:
    """``ok``, ``unknown`` (never issued to this device, or purged), ``used`` or ``expired``."""
    row = conn.execute(
        "SELECT device_id, expires_at, used_at FROM session_nonces WHERE nonce = ?", (nonce,)
    ).fetchone()
    if row is None or row[0] != device_id:
        return "unknown"
    if row[2] is not None:
        return "used"
    if row[1] < now_iso(now):
        return "expired"
    return "ok"


def claim_nonce(conn: Connection, nonce: str, now: datetime) -> bool:
    """Mark the nonce used; False when someone else used it first."""
    cur = conn.execute(
        "UPDATE session_nonces SET used_at = ? WHERE nonce = ? AND used_at IS NULL",
        (now_iso(now), nonce),
    )
    return cur.rowcount == 1


def record_skew(conn: Connection, device_id: str, skew_s: float) -> None:
    """Remember the device's clock error as seen at its last session start."""
    conn.execute("UPDATE devices SET clock_skew_s = ? WHERE device_id = ?", (skew_s, device_id))


def mint_token(conn: Connection, device_id: str, ttl_s: float = 900.0) -> str:
    """A session token for ``device_id`` straight from the database (tools and tests).

    Whoever can read the database can do this anyway; devices go through
    ``POST /v1/session``.
    """
    state = load_state(conn, device_id)
    if state is None:
        raise LookupError(f"no device {device_id}")
    expires = int(time.time() + ttl_s)
    return TokenCodec(session_secret(conn)).issue(device_id, state.key_epoch, expires)
