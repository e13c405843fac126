"""The board's test app: the real server app with the board wired in (until server/app.py
wires it itself, this adds what is missing), real data and real accounts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from server import board
from server.app import OPERATIONS, create_app
from server.config import ServerConfig


def board_app(database: Path | str, **kwargs: Any) -> web.Application:
    """``create_app`` plus the board's routes and templates (when the app lacks them)."""
    app = create_app(ServerConfig.default(database=database), **kwargs)
    served = {(op.method, op.path) for op in OPERATIONS}
    for op in board.OPERATIONS:
        if (op.method, op.path) not in served:
            app.router.add_route(op.method, op.path, op.handler)
    if not any(getattr(r, "name", None) == "board-static" for r in app.router.resources()):
        board.setup(app)
    return app


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
