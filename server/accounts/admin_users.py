"""``/v1/admin/users``: admins manage accounts over the API (the CLI's ``kiosk server user``
verbs run the same storage functions against the database directly)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from core.wire_admin import UserInfo, UserList, UserRequest
from server.accounts import users
from server.accounts.passwords import hash_password
from server.appkeys import ADMIN, DATABASE
from server.errors import BadRequest
from server.fleet.sessions import now_iso, utc_now
from server.http.bodies import read_body
from server.http.middleware import json_error
from server.http.operations import Operation
from server.http.views import json_response
from server.storage.connection import Connection
from server.storage.db import transaction

log = logging.getLogger(__name__)


def _info(account: users.Account) -> UserInfo:
    return UserInfo(account.username, account.role, list(account.sites), account.created_at)


async def add_user(request: web.Request) -> web.Response:
    """Create an account or replace its role, sites and password (its sessions end)."""
    body = await read_body(request, UserRequest)
    try:
        users.check_account(body.username, body.role, body.sites)
    except users.AccountError as exc:
        raise BadRequest(str(exc)) from exc
    hashed = await asyncio.to_thread(hash_password, body.password)

    def save(conn: Connection) -> list[users.Account]:
        with transaction(conn):
            users.save_user(conn, body.username, body.role, body.sites, hashed, now_iso(utc_now()))
        return [a for a in users.list_users(conn) if a.username == body.username]

    [account] = await request.app[DATABASE].run(save)
    log.info("admin %s saved %s account %s", request[ADMIN], body.role, body.username)
    return json_response(_info(account))


async def list_accounts(request: web.Request) -> web.Response:
    accounts = await request.app[DATABASE].run(users.list_users)
    return json_response(UserList([_info(a) for a in accounts]))


async def remove_account(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    if username == request[ADMIN]:
        raise json_error(web.HTTPConflict, "refused", "you cannot remove your own account")

    def remove(conn: Connection) -> None:
        with transaction(conn):
            users.remove_user(conn, username)

    try:
        await request.app[DATABASE].run(remove)
    except users.AccountError as exc:
        raise json_error(web.HTTPNotFound, "not_found", str(exc)) from exc
    log.info("admin %s removed account %s", request[ADMIN], username)
    return web.json_response({"removed": username})


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/v1/admin/users",
        add_user,
        "admin",
        "Create an account (admin, guard with its sites, auditor) or replace one",
        request=UserRequest,
        response=UserInfo,
    ),
    Operation("GET", "/v1/admin/users", list_accounts, "admin", "Every account", response=UserList),
    Operation(
        "DELETE",
        "/v1/admin/users/{username}",
        remove_account,
        "admin",
        "Remove an account and end its sessions",
        errors=(409,),
    ),
)
