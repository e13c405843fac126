"""Fixtures for the alert tests: the server tests' database (both backends) and config."""

from __future__ import annotations

from tests.server.conftest import config, db_path

__all__ = ["config", "db_path"]
