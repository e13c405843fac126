"""``--workers 2``: whichever worker answers a scrape, it shows every worker's counters,
the database's facts once, and each live worker's CPU and memory; a killed worker's
counters stay counted; the shared directory is removed at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.pgserver import free_port
from tests.server.conftest import People
from tests.server.multiproc import ServerProcess, stop, wait_ready

from .support import Samples, parse, total, value

VERIFIES = 20
SCRAPES = 12


@pytest.fixture
def two_workers(db_path: Path | str, tmp_path: Path, people: People) -> Iterator[ServerProcess]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.metrics.serve_workers", str(db_path), str(port), "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        yield server
    finally:
        stop(server)


async def _scrape(url: str) -> Samples:
    """One scrape on a connection of its own (the kernel picks the worker per connection)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as s, s.get(url + "/metrics") as resp:
        assert resp.status == 200, await resp.text()
        return parse(await resp.text())


def _pids(samples: Samples) -> set[str]:
    return {
        dict(labels)["pid"]
        for name, labels in samples
        if name == "siheyi_worker_resident_memory_bytes"
    }


async def _until_pids(
    url: str, check: Callable[[set[str]], bool], timeout_s: float = 20.0
) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = await _scrape(url)
        if check(_pids(samples)):
            return samples
        assert time.monotonic() < deadline, f"workers seen: {_pids(samples)}"
        time.sleep(0.2)


async def test_every_scrape_shows_every_worker(
    two_workers: ServerProcess, auth: dict[str, str], people: People, tmp_path: Path
) -> None:
    await wait_ready(two_workers)
    [shared] = list(tmp_path.glob("siheyi-metrics-*"))
    assert shared.stat().st_mode & 0o077 == 0  # private to the server's user
    url = two_workers.url
    for _ in range(VERIFIES):  # new connections: spread over both workers
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            body = {
                "tap_id": f"k1-{uuid.uuid4().hex[:12]}",
                "credential": {"kind": "id_card", "id_number": people.passing},
            }
            async with s.post(url + "/v1/verify", json=body, headers=auth) as resp:
                assert resp.status == 200, await resp.text()
    first = await _until_pids(url, lambda pids: len(pids) == 2)
    for _ in range(SCRAPES):
        samples = await _scrape(url)
        assert value(samples, "siheyi_verify_seconds_count", outcome="pass") == VERIFIES
        assert total(samples, "siheyi_source_seconds_count", source="nat") == VERIFIES
        assert len(_pids(samples)) == 2
        assert value(samples, "siheyi_kiosks", site="site-a", state="offline") == 1  # once
    victim = int(sorted(_pids(first))[0])
    os.kill(victim, signal.SIGKILL)
    after = await _until_pids(url, lambda pids: len(pids) == 2 and str(victim) not in pids)
    assert value(after, "siheyi_verify_seconds_count", outcome="pass") == VERIFIES
    assert stop(two_workers) == 0
    assert not shared.exists()
