"""The live kiosk board for guards: pages under ``/board/`` and the JSON API they use.

Server-rendered Jinja2 templates (aiohttp-jinja2) plus one small static ES module that
listens to ``GET /v1/guard/events`` (server-sent events) and patches the page; no front-end
build step, no inline script (the pages run under ``script-src 'self'``). docs/board.md says
why this stack.

Wiring (server/app.py): the API routes are ``OPERATIONS`` (in the OpenAPI document);
:func:`setup` adds the template environment, the pages and the static files.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from server.board import api, live, pages, render
from server.http.operations import Operation

HERE = Path(__file__).resolve().parent
STATIC_PREFIX = "/board/static/"

OPERATIONS: tuple[Operation, ...] = (*api.OPERATIONS, *live.OPERATIONS)


def setup(app: web.Application) -> None:
    """Templates, pages and static files of the board on ``app``."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["clock"] = render.clock
    app.router.add_routes(pages.ROUTES)
    app.router.add_static(
        STATIC_PREFIX, HERE / "static", name=render.STATIC_ROUTE, append_version=True
    )
