"""Taps at a steady rate for bench/board_fanout.py: ``POST /v1/verify`` from a set of kiosks.

Reads one JSON line from stdin: ``{"url", "tappers": [[device_id, token], …], "ids": [ID
number, …], "rate", "seconds", "run"}``. Open loop: tap ``i`` is sent at ``start + i / rate``
whatever the answers before it, by tapper ``i mod T`` with person ``(i div T) mod P``; so
each kiosk's successive taps name different people, and the server's ``tap`` event
(``device_id``, ``masked_id``) tells the bench which tap a board received. Prints one JSON
object: per tap ``[device_id, person index, sent, status]`` (``sent``: ``time.time()`` just
before the request went out) and the answers' latencies.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

Sent = tuple[str, int, float, int]


async def tap(
    session: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]
) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        async with session.post(
            url, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            await resp.read()
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError):
        status = 0
    return status, time.perf_counter() - started


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    tappers, ids = spec["tappers"], spec["ids"]
    rate, total = float(spec["rate"]), int(float(spec["rate"]) * float(spec["seconds"]))
    url = spec["url"] + "/v1/verify"
    sent: list[Sent] = []
    latencies: list[float] = []
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            device_id, token = tappers[i % len(tappers)]
            person = (i // len(tappers)) % len(ids)
            body = {
                "tap_id": f"{spec['run']}-{i}",
                "credential": {"kind": "id_card", "id_number": ids[person]},
            }
            slot = len(sent)
            sent.append((device_id, person, time.time(), 0))
            status, latency = await tap(session, url, token, body)
            sent[slot] = (*sent[slot][:3], status)
            latencies.append(latency)

        start = time.perf_counter() + 0.2
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    return {"sent": sent, "latencies_s": latencies}


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    print(json.dumps(asyncio.run(run(spec))), flush=True)


if __name__ == "__main__":
    main()
