"""Fixtures for the alert tests: the server tests' database (both backends), config and
provisioned kiosk."""

from __future__ import annotations

from tests.server.conftest import config, db_path, device

__all__ = ["config", "db_path", "device"]
