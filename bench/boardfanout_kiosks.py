"""Kiosks holding their command WebSocket, for bench/board_fanout.py (one process of many).

Reads one JSON line from stdin: ``{"url", "source_ip", "tokens": [token, …],
"concurrency"}``. Connects every kiosk (``Authorization: Bearer <token>``), answering the
server's pings as a kiosk does (aiohttp answers them while a reader waits on the socket), and
prints JSON lines: progress ``{"connected", "failed"}`` now and then, then ``{"ready": true,
…}``. It holds the sockets until stdin says ``stop`` (or closes), then prints
``{"still_open", "closed_early", "close_codes"}`` and exits.

A process may hold at most its file limit of sockets (the soft limit is raised to the hard
one), so the bench splits the fleet over several of these; each binds its own loopback
source address so the fleet never runs out of ephemeral ports on one address pair.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections import Counter
from typing import Any

import aiohttp

PROGRESS_EVERY_S = 2.0


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Fleet:
    """The sockets of this process and what became of them."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.readers: list[asyncio.Task[None]] = []
        self.failed: Counter[str] = Counter()
        self.closed_early = 0
        self.close_codes: Counter[str] = Counter()
        self.stopping = False

    async def connect(self, token: str, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                ws = await self.session.ws_connect(
                    self.url,
                    headers={"Authorization": f"Bearer {token}"},
                    autoping=True,
                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                )
            except aiohttp.WSServerHandshakeError as exc:
                self.failed[f"http {exc.status}"] += 1
                return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.failed[type(exc).__name__] += 1
                return
        self.sockets.append(ws)
        self.readers.append(asyncio.create_task(self.read(ws)))

    async def read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Wait on the socket (pings are answered meanwhile) until it closes."""
        async for _ in ws:
            pass
        if not self.stopping:
            self.closed_early += 1
            self.close_codes[str(ws.close_code)] += 1


async def progress(fleet: Fleet) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        say(connected=len(fleet.sockets), failed=dict(fleet.failed))


async def run(spec: dict[str, Any]) -> None:
    connector = aiohttp.TCPConnector(limit=0, local_addr=(spec["source_ip"], 0))
    timeout = aiohttp.ClientTimeout(total=None, connect=60, sock_connect=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        fleet = Fleet(spec["url"], session)
        gate = asyncio.Semaphore(int(spec.get("concurrency", 64)))
        reporter = asyncio.create_task(progress(fleet))
        started = time.perf_counter()
        await asyncio.gather(*(fleet.connect(t, gate) for t in spec["tokens"]))
        reporter.cancel()
        say(
            ready=True,
            connected=len(fleet.sockets),
            failed=dict(fleet.failed),
            seconds=round(time.perf_counter() - started, 2),
        )
        await asyncio.to_thread(wait_for_stop)
        still_open = sum(1 for ws in fleet.sockets if not ws.closed)
        fleet.stopping = True
        say(
            still_open=still_open,
            closed_early=fleet.closed_early,
            close_codes=dict(fleet.close_codes),
        )
        await asyncio.gather(*(ws.close() for ws in fleet.sockets), return_exceptions=True)
        for task in fleet.readers:
            task.cancel()


def wait_for_stop() -> None:
    for line in sys.stdin:
        if line.strip() == "stop":
            return


def main() -> None:
    raise_fd_limit()
    spec = json.loads(sys.stdin.readline())
    asyncio.run(run(spec))


if __name__ == "__main__":
    main()
