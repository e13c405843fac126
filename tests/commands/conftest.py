"""Fixtures of the command channel tests: the server fixtures (each test on SQLite and on
PostgreSQL), and an app with the command channel wired in."""

from __future__ import annotations

from tests.server.conftest import auth, config, db_path, device

__all__ = ["auth", "config", "db_path", "device"]
