"""What /metrics counts: verifies by outcome, sources, audit ingest, the database's facts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from server.config import ServerConfig
from server.storage.db import connect, transaction
from tests.server.conftest import People
from tests.server.test_audit import chain, event_hash
from tests.server.test_verify_http import verify

from .support import Samples, metrics_app, parse, total, value


async def scrape(client: TestClient) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200, await resp.text()
    return parse(await resp.text())


async def _client(aiohttp_client: Any, config: ServerConfig) -> TestClient:
    client: TestClient = await aiohttp_client(metrics_app(config))
    return client


async def test_verify_counts_by_outcome_and_source(
    aiohttp_client: Any, config: ServerConfig, auth: dict[str, str], people: People
) -> None:
    client = await _client(aiohttp_client, config)
    before = await scrape(client)
    await verify(client, auth, people.passing)
    await verify(client, auth, people.passing)
    await verify(client, auth, people.yellow)
    after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("siheyi_verify_seconds_count", outcome="pass") == 2
    assert grew("siheyi_verify_seconds_count", outcome="check") == 1
    assert grew("siheyi_verify_seconds_bucket", outcome="pass", le="+Inf") == 2
    for source in ("health_code", "nat", "vaccination", "travel"):
        assert grew("siheyi_source_seconds_count", source=source) == 3
        assert value(after, "siheyi_source_failing", source=source) == 0
        assert value(after, "siheyi_source_last_ok_timestamp_seconds", source=source) > 0


async def test_audit_ingest_counts_events_duplicates_and_conflicts(
    aiohttp_client: Any, config: ServerConfig, auth: dict[str, str]
) -> None:
    client = await _client(aiohttp_client, config)
    before = await scrape(client)
    events = chain(1, 5)
    for batch in (events, events[:2]):  # the second is a resend: duplicates
        resp = await client.post("/v1/audit", json={"events": batch}, headers=auth)
        assert resp.status == 200, await resp.text()
    changed = chain(1, 2)  # event 2 sent again, different: a conflict (and a chain break)
    changed[1]["latency_ms"] = 1.0
    changed[1]["hash"] = event_hash(changed[1])
    resp = await client.post("/v1/audit", json={"events": changed}, headers=auth)
    assert resp.status == 200
    after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("siheyi_audit_events_total", result="stored") == 6  # the conflict is kept too
    assert grew("siheyi_audit_events_total", result="duplicate") == 3
    assert grew("siheyi_audit_conflicts_total") == 1
    assert grew("siheyi_audit_chain_breaks_total") == 1
    assert grew("siheyi_audit_batches_total", result="new") == 2
    assert grew("siheyi_audit_batches_total", result="resend") == 1


async def test_kiosks_online_and_open_alerts_per_site(
    aiohttp_client: Any, config: ServerConfig, auth: dict[str, str], db_path: Path
) -> None:
    client = await _client(aiohttp_client, config)
    first = await scrape(client)
    assert value(first, "siheyi_kiosks", site="site-a", state="offline") == 1
    assert value(first, "siheyi_kiosks", site="site-a", state="online") == 0
    resp = await client.post("/v1/heartbeat", json={"boot_id": "b1"}, headers=auth)
    assert resp.status == 200
    with connect(db_path) as conn, transaction(conn):
        conn.execute(
            "INSERT INTO alerts (id, subject, kind, site, raised_at, updated_at)"
            " VALUES ('a1', 'gate:site-a/gate-1', 'invalid_taps', 'site-a', ?, ?)",
            ("2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"),
        )
    second = await scrape(client)
    assert value(second, "siheyi_kiosks", site="site-a", state="online") == 1
    assert value(second, "siheyi_kiosks", site="site-a", state="offline") == 0
    assert value(second, "siheyi_alerts_open", site="site-a", kind="invalid_taps") == 1
    assert total(second, "siheyi_alerts_open") == 1


async def test_worker_and_process_stats(aiohttp_client: Any, config: ServerConfig) -> None:
    samples = await scrape(await _client(aiohttp_client, config))
    assert value(samples, "siheyi_worker_resident_memory_bytes") > 10_000_000
    assert value(samples, "siheyi_worker_cpu_seconds") > 0
    assert value(samples, "process_resident_memory_bytes") > 10_000_000
