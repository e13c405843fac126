"""The aiohttp application factory: ``create_app(config)``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from server import board, commands
from server.accounts import admin_users
from server.accounts import login as accounts_login
from server.alerts import hooks as alerts
from server.alerts import views as alert_views
from server.appkeys import (
    CLIENT_SESSION,
    CLOCK,
    CONFIG,
    DATABASE,
    DIRECTORY,
    LOGIN_THROTTLE,
    REPLAY,
    SIGNING_KEY,
    SNAPSHOTS,
    SOURCE_FACTORY,
    TOKENS,
    VERIFIER,
    Clock,
    SourceFactory,
)
from server.audit import read_views as audit_read_views
from server.config import ServerConfig
from server.events import end_streams, events_ctx
from server.events import views as events_views
from server.fleet import admin, device_views
from server.fleet.sessions import DeviceDirectory, TokenCodec, session_secret
from server.http import views
from server.http.auth import auth_middleware
from server.http.headers import security_headers_middleware
from server.http.loginguard import LoginThrottle
from server.http.middleware import PROTOCOL_LOG, error_middleware
from server.http.operations import Operation
from server.http.proxies import proxy_middleware
from server.http.ratelimit import device_share_middleware, ratelimit_middleware
from server.lookup import views as lookup_views
from server.metrics import views as metrics_views
from server.offline.keys import signing_key
from server.offline.snapshot import SnapshotService
from server.releases import views as release_views
from server.storage.db import open_database
from server.verify.replay import TapReplay
from server.verify.resilience import ResilientSource
from server.verify.service import Verifier
from server.verify.upstream import configured_resolver, configured_sources
from server.voicepacks import views as voice_pack_views

MAX_BODY_BYTES = 1024 * 1024
#: Connections the shared upstream client keeps open at most, over all upstreams.
UPSTREAM_CONNECTIONS = 512

#: Every operation served, in one table (the OpenAPI document is made from it).
OPERATIONS: tuple[Operation, ...] = (
    *views.OPERATIONS,
    *device_views.OPERATIONS,
    *admin.OPERATIONS,
    *accounts_login.OPERATIONS,
    *admin_users.OPERATIONS,
    *events_views.OPERATIONS,
    *lookup_views.OPERATIONS,
    *commands.OPERATIONS,
    *audit_read_views.OPERATIONS,
    *board.OPERATIONS,
    *alert_views.OPERATIONS,
    *release_views.OPERATIONS,
    *voice_pack_views.OPERATIONS,
    *metrics_views.OPERATIONS,
)
ROUTES = [op.route() for op in OPERATIONS]


async def _client_session_ctx(app: web.Application) -> AsyncIterator[None]:
    """One shared HTTP client for every upstream source, for the app's lifetime."""
    connector = aiohttp.TCPConnector(limit=UPSTREAM_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        app[CLIENT_SESSION] = session
        yield


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the database, then the sources, the verifier and the snapshot service over it."""
    config = app[CONFIG]
    clock = app[CLOCK]
    db = open_database(config.database, pool_size=config.pool_size)
    await db.open()
    snapshots: SnapshotService | None = None
    try:
        app[DATABASE] = db
        factory = app.get(SOURCE_FACTORY)
        if factory is not None:
            adapters = list(factory(db))
        else:
            adapters = configured_sources(config, db, app[CLIENT_SESSION], clock=clock)
        sources = [
            ResilientSource(
                adapter,
                timeout_s=config.timeout_for(adapter.name),
                max_entries=config.source_cache_size,
                clock=clock,
            )
            for adapter in adapters
        ]
        resolver = configured_resolver(config, db, app[CLIENT_SESSION], clock=clock)
        app[VERIFIER] = Verifier(sources, max_stale_s=config.source_max_stale_s, resolver=resolver)
        app[SIGNING_KEY] = await db.run(signing_key)
        snapshots = SnapshotService(db, app[SIGNING_KEY], config, app[VERIFIER].sources, clock)
        app[SNAPSHOTS] = snapshots
        yield
    finally:
        if snapshots is not None:
            await snapshots.close()
        await db.close()


async def _identity_ctx(app: web.Application) -> AsyncIterator[None]:
    """Session tokens, the cached device directory and the tap replay memory."""
    db = app[DATABASE]
    identity = app[CONFIG].identity
    app[TOKENS] = TokenCodec(await db.run(session_secret))
    app[DIRECTORY] = DeviceDirectory(db, identity.status_sync_s)
    replay = TapReplay(db, ttl_s=identity.replay_ttl_s, recent=identity.replay_window)
    app[REPLAY] = replay
    replay.start()
    try:
        yield
    finally:
        await replay.close()


def create_app(
    config: ServerConfig,
    *,
    source_factory: SourceFactory | None = None,
    clock: Clock | None = None,
) -> web.Application:
    """Build the server application.

    ``source_factory`` builds the source adapters once the database is open (default: what
    ``[sources]`` configures — the local tables or HTTP upstreams); every adapter is wrapped
    in a :class:`~server.verify.resilience.ResilientSource`. ``clock`` returns an aware
    ``datetime`` (default: UTC now).
    """
    app = web.Application(
        middlewares=[
            security_headers_middleware,  # outermost: error answers get the headers too
            error_middleware,
            *([proxy_middleware(config.trusted_proxies)] if config.trusted_proxies else []),
            ratelimit_middleware(config.limits),
            auth_middleware,
            device_share_middleware(config.limits),
        ],
        client_max_size=MAX_BODY_BYTES,
        handler_args={"logger": PROTOCOL_LOG},
    )
    app[CONFIG] = config
    app[LOGIN_THROTTLE] = LoginThrottle(config.limits)
    app[device_views.HEALTH_SEEN] = {}
    if source_factory is not None:
        app[SOURCE_FACTORY] = source_factory
    app[CLOCK] = clock or views.now_utc
    app.cleanup_ctx.append(_client_session_ctx)
    app.cleanup_ctx.append(_database_ctx)
    app.cleanup_ctx.append(_identity_ctx)
    metrics_views.install(app, config.metrics)  # after the database: scrapes read it
    app.cleanup_ctx.append(events_ctx)
    commands.install(app)  # after the bus: the hub relays commands over it
    app.cleanup_ctx.append(alerts.alerts_ctx)  # after the bus: it publishes on it
    app.on_shutdown.append(end_streams)  # open event streams end before handlers are awaited
    app.add_routes(ROUTES)
    board.setup(app)  # the guard board's pages and static files (not part of the API)
    return app
