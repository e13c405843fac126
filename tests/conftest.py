"""Fixtures every test package shares: the PostgreSQL server the storage tests run on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgserver import PgCluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One real PostgreSQL server per test process (xdist worker), started on first use."""
    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The database under test: a SQLite file, or a new migrated database on the test
    PostgreSQL (a ``postgresql://`` URL). Tests taking it run once on each backend."""
    if request.param == "sqlite":
        return tmp_path / "siheyi.db"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database()
