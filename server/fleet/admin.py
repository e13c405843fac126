"""Administrators: argon2id passwords, bearer tokens, and the admin API (``/v1/admin/*``).

``kiosk provision init`` creates the first administrator. ``POST /v1/admin/login`` exchanges
user name and password for a token (random 32 bytes; only SHA-256 is stored) valid for
``[identity] admin_token_ttl_s``. Password checks run off the event loop. The fleet SQL is
:mod:`server.fleet.registry`, the same code the local provisioning backend runs against the
file; bodies are the models of :mod:`core.wire_admin`, which ``kiosk provision --server-url``
speaks from an administrator's laptop.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TypeVar

import msgspec
import pyotp
from aiohttp import web

from core.wire_admin import (
    AuditAlerts,
    BulkAnswer,
    BulkRequest,
    ConfigLayers,
    ConfigSetRequest,
    ConfigVersion,
    DeviceInfo,
    DeviceList,
    EnrolCode,
    EnrolCodeRequest,
    LoginAnswer,
    LoginRequest,
    Registered,
    RegisterRequest,
    SiteList,
    SitesAdded,
    SitesRequest,
    TotpConfirm,
    TotpSecret,
    TotpState,
)
from server.accounts.login import admin_login
from server.accounts.passwords import (
    TOTP,
    TOTP_PENDING,
    TOTP_USED,
    get_secret,
    put_secret,
)
from server.appkeys import ADMIN, CONFIG, DATABASE, DIRECTORY
from server.audit import state as audit_state
from server.errors import BadRequest, FleetError, SerialExists
from server.fleet import registry as fleet
from server.fleet.sessions import utc_now
from server.http.bodies import decode_body, read_body, read_raw
from server.http.middleware import json_error
from server.http.operations import Operation
from server.http.views import json_response as _answer
from server.storage.connection import Connection
from server.storage.db import transaction

log = logging.getLogger(__name__)

USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
#: Bulk registration bodies may be larger than device requests: up to 16 MiB (~100,000 rows).
MAX_BULK_BYTES = 16 * 1024 * 1024


def create_admin(conn: Connection, username: str, password_hash: str, now: str) -> None:
    """Create or reset an administrator."""
    if USERNAME.fullmatch(username) is None:
        raise ValueError("admin user name: 1-64 of A-Z a-z 0-9 _ . @ -")
    conn.execute(
        "INSERT INTO admins (username, password_hash, role, created_at) VALUES (?, ?, 'admin', ?)"
        " ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash",
        (username, password_hash, now),
    )


T = TypeVar("T")


async def _in_transaction(request: web.Request, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in one transaction on the database thread; registry errors become the
    documented answers: 404 for an unknown device or site, 409 for a refusal, 400 for a bad
    field."""

    def run(conn: Connection) -> T:
        with transaction(conn):
            return work(conn)

    try:
        return await request.app[DATABASE].run(run)
    except FleetError as exc:
        if isinstance(exc, LookupError):
            raise json_error(web.HTTPNotFound, "not_found", str(exc)) from exc
        if isinstance(exc, SerialExists):
            raise json_error(web.HTTPConflict, "serial_exists", str(exc)) from exc
        if isinstance(exc, PermissionError):  # a revoked device: final
            raise json_error(web.HTTPConflict, "refused", str(exc)) from exc
        raise BadRequest(str(exc)) from exc


async def totp_begin(request: web.Request) -> web.Response:
    """``POST /v1/admin/totp``: a new second-factor secret for the calling account, pending
    until confirmed with a code (a typo in the authenticator cannot lock the account)."""
    user = request[ADMIN]
    secret = pyotp.random_base32()
    uri = pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name="Siheyi")
    await _in_transaction(request, lambda conn: put_secret(conn, f"{TOTP_PENDING}{user}", secret))
    log.info("admin %s: second factor enrolment started", user)
    return _answer(TotpSecret(secret, uri))


async def totp_confirm(request: web.Request) -> web.Response:
    """``POST /v1/admin/totp/confirm {code}``: from now on this account's logins need a code."""
    user = request[ADMIN]
    code = (await read_body(request, TotpConfirm)).code

    def confirm(conn: Connection) -> bool:
        pending = get_secret(conn, f"{TOTP_PENDING}{user}")
        if pending is None or not pyotp.TOTP(pending).verify(code, valid_window=1):
            return False
        put_secret(conn, f"{TOTP}{user}", pending)
        put_secret(conn, f"{TOTP_PENDING}{user}", None)
        return True

    if not await _in_transaction(request, confirm):
        raise BadRequest("code: does not match the pending secret (POST /v1/admin/totp first)")
    log.info("admin %s: second factor enabled", user)
    return _answer(TotpState(True))


async def totp_remove(request: web.Request) -> web.Response:
    """``DELETE /v1/admin/totp``: logins of the calling account need the password only."""
    user = request[ADMIN]

    def remove(conn: Connection) -> None:
        for prefix in (TOTP, TOTP_PENDING, TOTP_USED):
            put_secret(conn, f"{prefix}{user}", None)

    await _in_transaction(request, remove)
    log.info("admin %s: second factor removed", user)
    return _answer(TotpState(False))


def _bulk(conn: Connection, body: BulkRequest) -> BulkAnswer:
    rows = fleet.validated_rows(body.devices, body.rows)
    report = fleet.upsert_devices(
        conn, rows, create_sites=body.create_sites, dry_run=body.dry_run, now=utc_now()
    )
    facts = None
    if body.bundle and not body.dry_run:
        facts = fleet.bundle_facts(conn, fleet.created_sites(rows, report))
    return fleet.bulk_answer(report, facts)


async def devices_bulk(request: web.Request) -> web.Response:
    """``POST /v1/admin/devices``: upsert thousands of devices keyed by serial, one transaction.

    Bad rows are listed in the report; the rest is applied. With ``bundle`` the answer also
    carries what the new devices' bundles need, so an administrator's laptop can write them.
    """
    body = decode_body(await read_raw(request, MAX_BULK_BYTES), BulkRequest)
    answer = await _in_transaction(request, lambda conn: _bulk(conn, body))
    directory = request.app[DIRECTORY]
    for done in answer.devices:
        if done.action == "updated" and done.device_id:
            directory.invalidate(done.device_id)
    log.info(
        "admin %s bulk registration: %d created, %d updated, %d errors%s",
        request[ADMIN],
        answer.created,
        answer.updated,
        len(answer.errors),
        " (dry run)" if body.dry_run else "",
    )
    return _answer(answer)


async def device_register(request: web.Request) -> web.Response:
    """``POST /v1/admin/devices/{serial}``: one kiosk with its public key (or a new key)."""
    body = await read_body(request, RegisterRequest)
    serial = request.match_info["serial"]
    item = {"serial": serial, "site": body.site, "gate": body.gate, "location": body.location}
    try:
        row = fleet.device_row({**item, "public_key": body.public_key})
    except FleetError as exc:
        raise BadRequest(str(exc)) from exc
    registered = await _in_transaction(
        request, lambda conn: fleet.register_device(conn, row, rekey=body.rekey)
    )
    request.app[DIRECTORY].invalidate(registered.device_id)
    log.info("admin %s: %s %s", request[ADMIN], "re-keyed" if body.rekey else "added", serial)
    return _answer(registered)


async def devices_list(request: web.Request) -> web.Response:
    """``GET /v1/admin/devices?site=&gate=&status=&serial_prefix=``."""
    filters = {
        k: request.query[k]
        for k in ("site", "gate", "status", "serial_prefix")
        if request.query.get(k)
    }
    records = await request.app[DATABASE].run(lambda conn: fleet.list_records(conn, **filters))
    return _answer(DeviceList([fleet.device_info(r) for r in records]))


async def device_action(request: web.Request) -> web.Response:
    """``POST /v1/admin/devices/{serial}/{revoke|quarantine|release|rotate}``."""
    serial = request.match_info["serial"]
    action = request.match_info["action"]
    if action not in ("revoke", "quarantine", "release", "rotate"):
        raise json_error(web.HTTPNotFound, "not_found", f"unknown action {action!r}")
    info = await _in_transaction(request, lambda conn: fleet.device_action(conn, serial, action))
    request.app[DIRECTORY].invalidate(info.device_id)
    log.info("admin %s: %s %s", request[ADMIN], action, serial)
    return _answer(info)


async def enrol_code(request: web.Request) -> web.Response:
    """``POST /v1/admin/devices/{serial}/enrol-code {ttl_s?}`` (the body may be empty)."""
    serial = request.match_info["serial"]
    raw = await read_raw(request)
    body = decode_body(raw, EnrolCodeRequest) if raw.strip() else EnrolCodeRequest()
    ttl = body.ttl_s if body.ttl_s is not None else request.app[CONFIG].identity.enrol_code_ttl_s
    code, expires = await _in_transaction(
        request, lambda conn: fleet.issue_enrol_code(conn, serial, ttl)
    )
    request.app[DIRECTORY].invalidate()
    log.info("admin %s: enrol-code %s", request[ADMIN], serial)
    return _answer(EnrolCode(serial, code, expires))


async def sites_add(request: web.Request) -> web.Response:
    """``POST /v1/admin/sites {sites}`` → the sites that were new."""
    body = await read_body(request, SitesRequest)
    added = await _in_transaction(request, lambda conn: fleet.add_sites(conn, body.sites))
    return _answer(SitesAdded(added))


async def sites_list(request: web.Request) -> web.Response:
    """``GET /v1/admin/sites``."""
    return _answer(SiteList(await request.app[DATABASE].run(fleet.list_sites)))


async def config_set(request: web.Request) -> web.Response:
    """``POST /v1/admin/config {scope, target, key, value}`` → ``{config_version}``."""
    body = await read_body(request, ConfigSetRequest)
    version = await _in_transaction(
        request,
        lambda conn: fleet.set_config(conn, body.scope, body.target, body.key, body.value),
    )
    return _answer(ConfigVersion(version))


async def config_list(request: web.Request) -> web.Response:
    """``GET /v1/admin/config``: every layer's keys."""
    return _answer(await request.app[DATABASE].run(fleet.config_answer))


async def audit_alerts(request: web.Request) -> web.Response:
    """``GET /v1/admin/audit/alerts``: kiosks whose audit needs a person (a full journal,
    conflicts, chain breaks, lost or flagged events), latest problem first."""
    rows = await request.app[DATABASE].run(audit_state.alerts)
    return _answer(msgspec.convert({"devices": rows}, AuditAlerts))


_FILTERS = (
    ("site", "only this site"),
    ("gate", "only this gate"),
    ("status", "active, quarantined or revoked"),
    ("serial_prefix", "serials starting with this"),
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/v1/admin/login",
        admin_login,
        "none",
        "An admin token for a password",
        request=LoginRequest,
        response=LoginAnswer,
        errors=(401, 429),
    ),
    Operation(
        "POST",
        "/v1/admin/totp",
        totp_begin,
        "admin",
        "Start enrolling a TOTP second factor for this account",
        response=TotpSecret,
        errors=(401,),
    ),
    Operation(
        "POST",
        "/v1/admin/totp/confirm",
        totp_confirm,
        "admin",
        "Confirm the TOTP second factor with a code",
        request=TotpConfirm,
        response=TotpState,
        errors=(401,),
    ),
    Operation(
        "DELETE",
        "/v1/admin/totp",
        totp_remove,
        "admin",
        "Remove this account's TOTP second factor",
        response=TotpState,
        errors=(401,),
    ),
    Operation(
        "POST",
        "/v1/admin/devices",
        devices_bulk,
        "admin",
        "Bulk upsert of kiosks",
        request=BulkRequest,
        response=BulkAnswer,
        errors=(401, 413),
    ),
    Operation(
        "GET",
        "/v1/admin/devices",
        devices_list,
        "admin",
        "List kiosks",
        response=DeviceList,
        errors=(401,),
        query=_FILTERS,
    ),
    Operation(
        "POST",
        "/v1/admin/devices/{serial}",
        device_register,
        "admin",
        "Register one kiosk with its public key, or re-key it",
        request=RegisterRequest,
        response=Registered,
        errors=(401, 409),
    ),
    # before the generic action: aiohttp matches routes in the order they are added
    Operation(
        "POST",
        "/v1/admin/devices/{serial}/enrol-code",
        enrol_code,
        "admin",
        "A single-use enrolment code",
        request=EnrolCodeRequest,
        response=EnrolCode,
        errors=(401, 404, 409),
    ),
    Operation(
        "POST",
        "/v1/admin/devices/{serial}/{action}",
        device_action,
        "admin",
        "Revoke, quarantine, release or rotate a kiosk",
        response=DeviceInfo,
        errors=(401, 404, 409),
    ),
    Operation(
        "POST",
        "/v1/admin/sites",
        sites_add,
        "admin",
        "Register sites",
        request=SitesRequest,
        response=SitesAdded,
        errors=(401,),
    ),
    Operation(
        "GET",
        "/v1/admin/sites",
        sites_list,
        "admin",
        "List sites",
        response=SiteList,
        errors=(401,),
    ),
    Operation(
        "POST",
        "/v1/admin/config",
        config_set,
        "admin",
        "Set a layered setting",
        request=ConfigSetRequest,
        response=ConfigVersion,
        errors=(401, 404),
    ),
    Operation(
        "GET",
        "/v1/admin/config",
        config_list,
        "admin",
        "Every layer's settings",
        response=ConfigLayers,
        errors=(401,),
    ),
    Operation(
        "GET",
        "/v1/admin/audit/alerts",
        audit_alerts,
        "admin",
        "Kiosks whose audit needs a person",
        response=AuditAlerts,
        errors=(401,),
    ),
)
