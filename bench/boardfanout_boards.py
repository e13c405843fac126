"""Open boards for bench/board_fanout.py: ``GET /v1/guard/events`` streams, arrivals timed.

Reads one JSON line from stdin: ``{"url", "tokens": [bearer token per board]}``. Opens every
stream as the board's script does (server-sent events, one ``data:`` line of JSON per
event), prints ``{"ready": true, "open", "opened", "refused"}`` once each stream has answered, and
records, for every ``tap`` event a board receives, ``[board, device_id, masked_id, at,
arrived]`` (``at``: the server's publish time; ``arrived``: this host's ``time.time()`` when
the line was read — the bench runs on one host, so the clocks agree). When stdin says
``stop`` (or closes) it prints one JSON object: the arrivals, the other kinds counted, the
``dropped`` notices' total, and streams that ended early.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import aiohttp

Arrival = tuple[int, str, str, float, float]


class Boards:
    """Every open stream's arrivals."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.kinds: Counter[str] = Counter()
        self.dropped = 0
        self.refused: Counter[str] = Counter()
        self.ended_early = 0
        self.stopping = False

    async def watch(self, session: aiohttp.ClientSession, url: str, board: int, token: str,
                    opened: asyncio.Future[bool]) -> None:  # fmt: skip
        try:
            async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                if resp.status != 200:
                    self.refused[f"http {resp.status} {await resp.text()}"[:120]] += 1
                    opened.set_result(False)
                    return
                async for raw in resp.content:
                    if not opened.done():
                        opened.set_result(True)
                    if raw.startswith(b"data: "):
                        self.record(board, raw[6:], time.time())
        except (aiohttp.ClientError, OSError) as exc:
            if not opened.done():
                self.refused[type(exc).__name__] += 1
                opened.set_result(False)
                return
        if not self.stopping:
            self.ended_early += 1

    def record(self, board: int, line: bytes, arrived: float) -> None:
        event = json.loads(line)
        kind, data = event["kind"], event["data"]
        self.kinds[kind] += 1
        if kind == "tap":
            self.arrivals.append(
                (board, data["device_id"], data.get("masked_id", ""), event["at"], arrived)
            )
        elif kind == "dropped":
            self.dropped += int(data.get("events", 0))


async def run(spec: dict[str, Any]) -> None:
    boards = Boards()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        opened = [loop.create_future() for _ in spec["tokens"]]
        tasks = [
            asyncio.create_task(boards.watch(session, spec["url"], n, token, opened[n]))
            for n, token in enumerate(spec["tokens"])
        ]
        results = await asyncio.gather(*opened)
        ready = {
            "ready": True,
            "open": sum(results),
            "opened": [n for n, ok in enumerate(results) if ok],
            "refused": dict(boards.refused),
        }
        print(json.dumps(ready), flush=True)
        await asyncio.to_thread(wait_for_stop)
        boards.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(
        json.dumps(
            {
                "arrivals": boards.arrivals,
                "kinds": dict(boards.kinds),
                "dropped": boards.dropped,
                "ended_early": boards.ended_early,
            }
        ),
        flush=True,
    )


def wait_for_stop() -> None:
    for line in sys.stdin:
        if line.strip() == "stop":
            return


def main() -> None:
    asyncio.run(run(json.loads(sys.stdin.readline())))


if __name__ == "__main__":
    main()
