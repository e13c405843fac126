"""The server fixtures (tests/server/conftest.py): each storage test runs on SQLite and
PostgreSQL; /metrics reads the database at most every few seconds, here every scrape."""

from __future__ import annotations

import pytest

from server.metrics import fleet
from tests.server.conftest import auth, config, db_path, device, people  # noqa: F401


@pytest.fixture(autouse=True)
def fresh_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "CACHE_S", 0.0)
