"""The uploader deletes only what the server acknowledged, and survives a server outage."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from device.link.client import ServerClient
from device.recording.journal import Journal
from device.recording.uploader import Uploader


def decision(i: int) -> dict[str, Any]:
    return {"kind": "decision", "outcome": "pass", "clock_trusted": True, "detail": {"i": i}}


async def test_uploads_in_batches_and_deletes_only_acked(tmp_path: Path) -> None:
    received: list[list[int]] = []
    state = {"fail": True, "ack_limit": 10**9}

    async def audit(request: web.Request) -> web.Response:
        if state["fail"]:
            return web.json_response({"error": "internal"}, status=503)
        events = (await request.json())["events"]
        seqs = [e["seq"] for e in events]
        received.append(seqs)
        acked = min(seqs[-1], state["ack_limit"])
        stored = len([s for s in seqs if s <= acked])
        return web.json_response(
            {
                "acked_seq": acked,
                "stored": stored,
                "duplicates": 0,
                "chain_breaks": [],
                "conflicts": [],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/audit", audit)
    server = TestServer(app)
    await server.start_server()
    client = ServerClient(str(server.make_url("")), token="k-1.s")
    async with Journal(tmp_path / "j.db", "k-1", "boot") as journal:
        for i in range(7):
            await journal.append(decision(i))
        up = Uploader(journal, client, interval_s=0.05, batch_size=3)
        task = asyncio.create_task(up.run())
        await asyncio.sleep(0.3)
        assert await journal.count() == 7 and up.failures >= 1  # server failing: nothing lost
        state["fail"] = False
        state["ack_limit"] = 5  # the server stored only up to seq 5
        up.poke()
        for _ in range(100):
            if await journal.count() == 2:
                break
            await asyncio.sleep(0.05)
        assert [e["seq"] for e in await journal.pending(10)] == [6, 7]
        state["ack_limit"] = 10**9
        for _ in range(100):
            if await journal.count() == 0:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await client.close()
    await server.close()
    assert received[0] == [1, 2, 3]
    assert {s for batch in received for s in batch} == set(range(1, 8))
