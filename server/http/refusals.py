"""Domain work for an admin API, run on the database thread, its refusals answered as the
API documents them.

A refusal is a :class:`Refusal` subclass that carries its HTTP ``status`` and error
``code``: the release and voice pack APIs raise them from their storage code, which knows
nothing of HTTP, and their handlers pass the work through :func:`in_transaction` (or
:func:`run_refusing` for work that makes its own transactions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

from aiohttp import web

from server.appkeys import DATABASE
from server.errors import ServerError
from server.http.middleware import json_error
from server.storage.connection import Connection
from server.storage.db import transaction

T = TypeVar("T")

_HTTP: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
}


class Refusal(ServerError):
    """A request refused for what it asks; answered ``status`` with ``{"error": code}``."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"


def answer(exc: Refusal) -> web.HTTPException:
    """The documented JSON answer to a refusal."""
    return json_error(_HTTP[exc.status], exc.code, str(exc))


async def run_refusing(request: web.Request, work: Callable[[Connection], T]) -> T:
    """``work`` on the database thread as it is; a refusal becomes its answer."""
    try:
        return await request.app[DATABASE].run(work)
    except Refusal as exc:
        raise answer(exc) from exc


async def in_transaction(request: web.Request, work: Callable[[Connection], T]) -> T:
    """``work`` in one transaction; a refusal becomes its answer (and nothing is kept)."""

    def run(conn: Connection) -> T:
        with transaction(conn):
            return work(conn)

    return await run_refusing(request, run)
