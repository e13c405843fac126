"""The aiohttp application factory: ``create_app(config)``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from server import views
from server.appkeys import (
    CLOCK,
    CONFIG,
    DATABASE,
    SOURCE_FACTORY,
    VERIFIER,
    Clock,
    SourceFactory,
)
from server.auth import auth_middleware
from server.config import ServerConfig
from server.db import Database
from server.middleware import error_middleware
from server.sources import local_sources
from server.verify import Verifier

MAX_BODY_BYTES = 1024 * 1024

ROUTES = [
    web.get("/healthz", views.healthz),
    web.post("/v1/verify", views.verify),
    web.post("/v1/audit", views.audit_upload),
    web.post("/v1/heartbeat", views.heartbeat),
]


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the database (and the verifier over its sources) for the app's lifetime."""
    db = Database(app[CONFIG].database)
    await db.open()
    app[DATABASE] = db
    app[VERIFIER] = Verifier(app[SOURCE_FACTORY](db), app[CONFIG].source_timeout_s)
    try:
        yield
    finally:
        await db.close()


def create_app(
    config: ServerConfig,
    *,
    source_factory: SourceFactory | None = None,
    clock: Clock | None = None,
) -> web.Application:
    """Build the server application.

    ``source_factory`` builds the source adapters once the database is open (default: the
    four local adapters); ``clock`` returns an aware ``datetime`` (default: UTC now).
    """
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[CONFIG] = config
    app[SOURCE_FACTORY] = source_factory or local_sources
    app[CLOCK] = clock or views.now_utc
    app.cleanup_ctx.append(_database_ctx)
    app.add_routes(ROUTES)
    return app
