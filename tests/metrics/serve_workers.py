"""``python -m tests.metrics.serve_workers DATABASE PORT WORKERS``: what ``kiosk server run
--workers N`` does (server/cli.py), with /metrics served whether or not the app factory
wires it yet (tests/metrics/support.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import replace

from aiohttp import web

from server.config import ServerConfig
from server.http.serving import serve
from server.http.workers import per_worker_limits, supervise

from .support import metrics_app


def main(database: str, port: int, workers: int) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = ServerConfig.default(database=database, port=port)
    config = replace(config, workers=workers, limits=per_worker_limits(config.limits, workers))

    def worker(_index: int) -> None:
        app = metrics_app(config)
        with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
            asyncio.run(serve(app, config.host, config.port, None, reuse_port=True))

    return supervise(worker, workers)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
