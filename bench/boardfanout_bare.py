"""The bare baseline of bench/board_fanout.py: idle aiohttp WebSockets and nothing else.

``GET /v1/device/ws`` upgrades any request to a WebSocket with the server's ping interval
(``heartbeat=10``) and holds it until it closes: no authentication, no database, no hub.
Several processes share the port (``SO_REUSEPORT``) like ``kiosk server run --workers N``,
so the memory each held socket costs the server can be compared with this floor.

    .venv/bin/python bench/boardfanout_bare.py --port 8099 --workers 2
"""

from __future__ import annotations

import argparse
import os
import resource
import sys

from aiohttp import web

PING_S = 10.0


async def socket(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=PING_S, max_msg_size=4096)
    await ws.prepare(request)
    async for _ in ws:
        pass
    return ws


def serve(port: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    app = web.Application()
    app.router.add_get("/v1/device/ws", socket)
    web.run_app(
        app, host="127.0.0.1", port=port, reuse_port=True, access_log=None, print=None,
        backlog=1024,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.workers - 1):
        if os.fork() == 0:
            serve(args.port)
            sys.exit(0)
    serve(args.port)


if __name__ == "__main__":
    main()
