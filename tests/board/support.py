"""The board's test app: the real server app with the board wired in (until server/app.py
wires it itself, this adds what is missing), real data and real accounts."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from server import board, commands
from server.alerts import views as alerts_views
from server.alerts.hooks import alerts_ctx
from server.app import OPERATIONS, create_app
from server.audit import read_views
from server.board.kiosks import BOARD_TZ
from server.config import ServerConfig
from server.http.operations import Operation
from server.lookup import views as lookup_views


def _pages_use() -> tuple[Operation, ...]:
    """The other parts' routes the board's pages call (alerts, lookup, audit read)."""
    return (*alerts_views.OPERATIONS, *lookup_views.OPERATIONS, *read_views.OPERATIONS)


def board_app(database: Path | str, **kwargs: Any) -> web.Application:
    """``create_app`` plus the board's routes and templates, and the routes its pages call
    (each only when server/app.py does not wire it yet)."""
    app = create_app(ServerConfig.default(database=database), **kwargs)
    served = {(op.method, op.path) for op in OPERATIONS}
    for op in (*board.OPERATIONS, *_pages_use()):
        if (op.method, op.path) not in served:
            app.router.add_route(op.method, op.path, op.handler)
    if ("GET", "/v1/guard/alerts") not in served:
        app.cleanup_ctx.append(alerts_ctx)
    if ("POST", "/v1/guard/kiosks/{device_id}/gate") not in served:
        app.router.add_routes([op.route() for op in commands.OPERATIONS])
        commands.install(app)
    if not any(getattr(r, "name", None) == "board-static" for r in app.router.resources()):
        board.setup(app)
    return app


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


GENESIS = "0" * 64


def event_hash(event: dict[str, Any]) -> str:
    body = {k: v for k, v in event.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def decisions(taps: list[tuple[str, list[str], bool]], now: datetime) -> list[dict[str, Any]]:
    """Journal events of decided taps ``(outcome, reasons, offline)``, hash-chained from
    seq 1 as a kiosk writes them, a second apart ending at ``now``."""
    events: list[dict[str, Any]] = []
    prev = GENESIS
    for seq, (outcome, reasons, offline) in enumerate(taps, start=1):
        at = now - timedelta(seconds=len(taps) - seq)
        event: dict[str, Any] = {
            "seq": seq,
            "wall_time": at.astimezone(BOARD_TZ).isoformat(timespec="seconds"),
            "mono_ns": 1_000_000 * seq,
            "boot_id": "boot-1",
            "clock_trusted": True,
            "kind": "decision",
            "outcome": outcome,
            "prompt": "",
            "masked_id": f"1101**********{seq:04d}",
            "pseudonym": "ab" * 32,
            "offline": offline,
            "cache_age_s": 5.0 if offline else None,
            "latency_ms": 80.0,
            "detail": {"reasons": reasons, "tap_id": f"t-{seq:06d}"},
            "prev_hash": prev,
        }
        event["hash"] = prev = event_hash(event)
        events.append(event)
    return events


def status(**changes: Any) -> dict[str, Any]:
    """A heartbeat body shaped like device/agent.py ``status()``."""
    body: dict[str, Any] = {
        "boot_id": "boot-1",
        "uptime_s": 12.0,
        "version": "0.9.1",
        "clock_trusted": True,
        "journal_pending": 3,
        "journal": {"full": False, "reserve": "ready", "held": 0, "dead_letters": 0, "lost": 0},
        "reader": {"url": "/dev/ttyUSB0", "connected": True, "reads": 4, "errors": {}},
        "sources": [{"source": "/dev/video0", "live": True, "connected": True, "frames": 90}],
        "circuit": {"state": "closed", "opened": 0},
    }
    body.update(changes)
    return body
