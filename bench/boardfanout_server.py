"""``kiosk server run`` for bench/board_fanout.py, with the routes the bench needs.

Exactly ``python -m siheyi.cli server run …`` (same argument parsing, ``--workers`` forking,
serving, limits), except that the application factory adds the kiosk command channel
(``GET /v1/device/ws``, server/commands) and the guards' event stream (``GET
/v1/guard/events``, server/board/live.py) when ``server/app.py`` does not wire them yet.
Once it does, this adds nothing and the bench measures the shipped server unchanged.

With ``BOARDFANOUT_LAG_DIR`` set, each worker also runs a probe that sleeps
:data:`PROBE_S` at a time and appends ``<unix time> <lag s>`` (how late it woke: time the
event loop was busy elsewhere) to ``lag-<pid>.txt`` there — instrumentation of the bench,
not of the server.

``--max-streams N`` (consumed here, not passed on) sets the event bus's per-process ceiling
of open streams (``server.events.bus.MAX_SUBSCRIBERS``), so the bench can say how many
boards the shipped ceiling admits and what the fan-out costs beyond it.

    .venv/bin/python bench/boardfanout_server.py server run --database URL --workers 2
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

import server.cli as server_cli
from server import app as server_app
from server.config import ServerConfig
from server.events import bus
from server.http.operations import Operation

SOCKET = ("GET", "/v1/device/ws")
PROBE_S = 0.05
LAGS: web.AppKey[asyncio.Task[None]] = web.AppKey("boardfanout_lags", asyncio.Task)


async def probe(path: Path) -> None:
    """Append how late each :data:`PROBE_S` sleep woke, until cancelled."""
    loop = asyncio.get_running_loop()
    with path.open("a", buffering=1) as out:
        while True:
            before = loop.time()
            await asyncio.sleep(PROBE_S)
            out.write(f"{time.time():.3f} {loop.time() - before - PROBE_S:.4f}\n")


async def start_probe(app: web.Application) -> None:
    lag_dir = os.environ.get("BOARDFANOUT_LAG_DIR")
    if lag_dir:
        app[LAGS] = asyncio.create_task(probe(Path(lag_dir) / f"lag-{os.getpid()}.txt"))


def _missing(ops: tuple[Operation, ...]) -> list[Operation]:
    served = {(op.method, op.path) for op in server_app.OPERATIONS}
    return [op for op in ops if (op.method, op.path) not in served]


def create_app(config: ServerConfig, **kwargs: Any) -> web.Application:
    """The server's app, plus the command channel and guard event stream if not wired."""
    from server import commands
    from server.board import live

    app = server_app.create_app(config, **kwargs)
    channel = _missing(commands.OPERATIONS)
    if any((op.method, op.path) == SOCKET for op in channel):
        commands.install(app)
    for op in (*channel, *_missing(live.OPERATIONS)):
        app.router.add_route(op.method, op.path, op.handler)
    app.on_startup.append(start_probe)
    return app


def main(argv: list[str]) -> int:
    if "--max-streams" in argv:
        at = argv.index("--max-streams")
        bus.MAX_SUBSCRIBERS = int(argv[at + 1])
        del argv[at : at + 2]
    server_cli.create_app = create_app  # type: ignore[attr-defined]
    from siheyi.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
