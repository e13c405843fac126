"""Fixtures every test package shares: the PostgreSQL server the storage tests run on."""

from __future__ import annotations

from collections.abc import Iterator

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
