"""Administrators: argon2id passwords, bearer tokens, and the admin API (``/v1/admin/*``).

``kiosk provision init`` creates the first administrator. ``POST /v1/admin/login`` exchanges
user name and password for a token (random 32 bytes; only SHA-256 is stored) valid for
``[identity] admin_token_ttl_s``. Password checks run off the event loop. The fleet SQL is
:mod:`server.fleet.registry`, the same code the provisioning CLI runs against the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import sqlite3
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from server.appkeys import ADMIN, CONFIG, DATABASE, DIRECTORY
from server.errors import BadRequest, FleetError, RowError
from server.fleet import registry as fleet
from server.fleet.sessions import now_iso, utc_now
from server.http import validation as v
from server.http.middleware import json_error
from server.http.operations import Operation
from server.storage.db import transaction

log = logging.getLogger(__name__)

USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
#: Bulk registration bodies may be larger than device requests: up to 16 MiB (~100,000 rows).
MAX_BULK_BYTES = 16 * 1024 * 1024
MAX_BULK_DEVICES = 100_000
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("no such administrator")


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


def create_admin(conn: sqlite3.Connection, username: str, password_hash: str, now: str) -> None:
    """Create or reset an administrator."""
    if USERNAME.fullmatch(username) is None:
        raise ValueError("admin user name: 1-64 of A-Z a-z 0-9 _ . @ -")
    conn.execute(
        "INSERT INTO admins (username, password_hash, role, created_at) VALUES (?, ?, 'admin', ?)"
        " ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash",
        (username, password_hash, now),
    )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _stored_hash(conn: sqlite3.Connection, username: str) -> str | None:
    row = conn.execute(
        "SELECT password_hash FROM admins WHERE username = ?", (username,)
    ).fetchone()
    return str(row[0]) if row else None


def _store_token(
    conn: sqlite3.Connection, token_hash: str, username: str, expires_at: str, now: str
) -> None:
    conn.execute("DELETE FROM admin_tokens WHERE expires_at < ?", (now,))
    conn.execute(
        "INSERT INTO admin_tokens (token_hash, username, expires_at) VALUES (?, ?, ?)",
        (token_hash, username, expires_at),
    )


def _token_owner(conn: sqlite3.Connection, token_hash: str, now: str) -> str | None:
    row = conn.execute(
        "SELECT username FROM admin_tokens WHERE token_hash = ? AND expires_at > ?",
        (token_hash, now),
    ).fetchone()
    return str(row[0]) if row else None


async def authenticate_admin(request: web.Request, token: str) -> str:
    """The administrator a bearer token belongs to, or a 401."""
    now = now_iso(utc_now())
    owner = await request.app[DATABASE].run(_token_owner, _token_hash(token), now)
    if owner is None:
        raise json_error(
            web.HTTPUnauthorized,
            "unauthenticated",
            "invalid or expired admin token",
            {"WWW-Authenticate": "Bearer"},
        )
    return owner


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


async def login(request: web.Request) -> web.Response:
    """``POST /v1/admin/login``: ``{username, password}`` → ``{token, expires_at}``."""
    body = v.parse_object(await request.read())
    username = v.req_string(body, "username", max_len=64)
    password = v.req_string(body, "password", max_len=1024)
    db = request.app[DATABASE]
    stored = await db.run(_stored_hash, username)
    ok = await asyncio.to_thread(password_ok, stored or _DUMMY_HASH, password)
    if stored is None or not ok:
        log.warning("admin login failed for %r", username[:64])
        raise json_error(web.HTTPUnauthorized, "unauthenticated", "wrong user name or password")
    now = utc_now()
    ttl = request.app[CONFIG].identity.admin_token_ttl_s
    token = secrets.token_urlsafe(32)
    expires = now_iso(now + timedelta(seconds=ttl))
    await db.run(_store_token, _token_hash(token), username, expires, now_iso(now))
    log.info("admin %s logged in", username)
    return _json({"token": token, "expires_at": expires})


async def _read_large(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BULK_BYTES:
        raise json_error(web.HTTPRequestEntityTooLarge, "too_large", "request body too large")
    data = await request.content.read(MAX_BULK_BYTES + 1)
    if len(data) > MAX_BULK_BYTES:
        raise json_error(web.HTTPRequestEntityTooLarge, "too_large", "request body too large")
    return v.parse_object(data)


def _bulk(
    conn: sqlite3.Connection,
    items: list[Any],
    create_sites: bool,
    dry_run: bool,
    now: datetime,
) -> fleet.BulkReport:
    rows: list[tuple[int, fleet.DeviceRow | RowError]] = []
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            rows.append((n, RowError(f"devices[{n - 1}]: must be an object")))
            continue
        if "private_key" in item:
            rows.append((n, RowError(f"devices[{n - 1}]: never send a private key")))
            continue
        try:
            rows.append((n, fleet.device_row(item)))
        except FleetError as exc:
            rows.append((n, RowError(f"devices[{n - 1}]: {exc}")))
    with transaction(conn):
        return fleet.upsert_devices(conn, rows, create_sites=create_sites, dry_run=dry_run, now=now)


async def devices_bulk(request: web.Request) -> web.Response:
    """``POST /v1/admin/devices``: upsert thousands of devices keyed by serial, one transaction.

    Body ``{"devices": [{serial, site, gate?, location?, public_key?, …}], "dry_run"?,
    "create_sites"?}``; answer: the per-row report (bad rows listed, the rest applied).
    """
    body = await _read_large(request)
    items = v.array(body, "devices", lo=1, hi=MAX_BULK_DEVICES)
    dry_run = v.boolean(body, "dry_run", required=False)
    create_sites = v.boolean(body, "create_sites", required=False)
    now = utc_now()
    report = await request.app[DATABASE].run(_bulk, items, create_sites, dry_run, now)
    directory = request.app[DIRECTORY]
    for result in report.results:
        if result.action == "updated" and result.device_id:
            directory.invalidate(result.device_id)
    log.info(
        "admin %s bulk registration: %d created, %d updated, %d errors%s",
        request[ADMIN],
        report.count("created"),
        report.count("updated"),
        len(report.errors),
        " (dry run)" if dry_run else "",
    )
    return _json(report.to_json())


async def devices_list(request: web.Request) -> web.Response:
    """``GET /v1/admin/devices?site=&gate=&status=&serial_prefix=``."""
    filters = {
        k: request.query[k]
        for k in ("site", "gate", "status", "serial_prefix")
        if request.query.get(k)
    }
    records = await request.app[DATABASE].run(lambda conn: fleet.list_records(conn, **filters))
    return _json({"devices": [r.to_json() for r in records]})


def _action(conn: sqlite3.Connection, serial: str, action: str, ttl_s: float) -> dict[str, Any]:
    with transaction(conn):
        if action == "enrol-code":
            code, expires = fleet.issue_enrol_code(conn, serial, ttl_s)
            return {"serial": serial, "code": code, "expires_at": expires}
        if action == "rotate":
            record = fleet.request_rotation(conn, serial)
        else:
            status = {"revoke": "revoked", "quarantine": "quarantined", "release": "active"}[action]
            record = fleet.set_status(conn, serial, status)
        return record.to_json()


async def device_action(request: web.Request) -> web.Response:
    """``POST /v1/admin/devices/{serial}/{revoke|quarantine|release|rotate|enrol-code}``."""
    serial = request.match_info["serial"]
    action = request.match_info["action"]
    if action not in ("revoke", "quarantine", "release", "rotate", "enrol-code"):
        raise json_error(web.HTTPNotFound, "not_found", f"unknown action {action!r}")
    ttl = request.app[CONFIG].identity.enrol_code_ttl_s
    try:
        result = await request.app[DATABASE].run(_action, serial, action, ttl)
    except LookupError as exc:
        raise json_error(web.HTTPNotFound, "not_found", str(exc)) from exc
    except FleetError as exc:
        raise json_error(web.HTTPConflict, "refused", str(exc)) from exc
    if "device_id" in result:
        request.app[DIRECTORY].invalidate(result["device_id"])
    else:
        request.app[DIRECTORY].invalidate()
    log.info("admin %s: %s %s", request[ADMIN], action, serial)
    return _json(result)


def _config(conn: sqlite3.Connection, scope: str, target: str, key: str, value: Any) -> int:
    with transaction(conn):
        return fleet.set_config(conn, scope, target, key, value)


async def config_set(request: web.Request) -> web.Response:
    """``POST /v1/admin/config {scope, target, key, value}`` → ``{config_version}``."""
    body = v.parse_object(await request.read())
    scope = v.req_string(body, "scope", max_len=16)
    target = v.string(body, "target", max_len=100, required=False) or ""
    key = v.req_string(body, "key", max_len=140)
    if "value" not in body:
        raise BadRequest("value: required (null removes the key)")
    try:
        version = await request.app[DATABASE].run(_config, scope, target, key, body["value"])
    except LookupError as exc:
        raise json_error(web.HTTPNotFound, "not_found", str(exc)) from exc
    except FleetError as exc:
        raise BadRequest(str(exc)) from exc
    return _json({"config_version": version})


OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", "/v1/admin/login", login, "none", "An admin token for a password"),
    Operation("POST", "/v1/admin/devices", devices_bulk, "admin", "Bulk upsert of kiosks"),
    Operation("GET", "/v1/admin/devices", devices_list, "admin", "List kiosks"),
    Operation(
        "POST", "/v1/admin/devices/{serial}/{action}", device_action, "admin", "Act on a kiosk"
    ),
    Operation("POST", "/v1/admin/config", config_set, "admin", "Set a layered setting"),
)
