"""Release fixtures: the storage tests' database on both backends, an admin, the app with
the release routes and the release key pinned as ``[releases] release_key``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.config import ServerConfig
from server.releases.settings import ReleaseSettings
from tests.releases.support import PUBLIC_HEX, Client, release_app
from tests.server.users_support import add_user, bearer, token_for


@pytest.fixture
def db_path(any_database: Path | str) -> Path | str:
    """The server's database: each test using it runs on SQLite and on PostgreSQL."""
    return any_database


@pytest.fixture
def config(db_path: Path | str) -> ServerConfig:
    return ServerConfig(database=str(db_path), releases=ReleaseSettings(PUBLIC_HEX))


@pytest.fixture
async def client(aiohttp_client: Any, config: ServerConfig) -> Client:
    add_user(config.database, "ops", "admin")
    return await aiohttp_client(release_app(config))  # type: ignore[no-any-return]


@pytest.fixture
async def admin(client: Client) -> dict[str, str]:
    """The admin's bearer header."""
    return bearer(await token_for(client, "ops"))
