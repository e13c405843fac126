"""Audit trails for the audit read tests: kiosks at sites, and hash-chained events stored
through the real ingestion with a chosen ``received_at``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from core.audit import GENESIS_HASH, hash_event
from provisioning.registry import add_device
from server.app import create_app
from server.audit import ingestion, read_views
from server.config import ServerConfig
from server.storage.db import connect
from siheyi.cli import local_fleet

OUTCOMES = ("pass", "check", "nat_expired", "invalid_credential")


def kiosk(db: Path | str, serial: str, site: str, gate: str = "gate-1") -> str:
    """Register a kiosk; its device_id."""
    return add_device(local_fleet(None, db), serial, site, gate, server_url="http://test").device_id


def events(
    first: int, last: int, prev: str = GENESIS_HASH, epoch: str = "e1"
) -> list[dict[str, Any]]:
    """Events ``first..last`` as a kiosk journal writes them: every field, nulls too.
    Seq n: outcome ``OUTCOMES[n % 4]``, offline when n is even, a fault every 5th."""
    out = []
    for seq in range(first, last + 1):
        fault = seq % 5 == 0
        event: dict[str, Any] = {
            "epoch": epoch,
            "seq": seq,
            "wall_time": f"2026-11-23T08:{seq // 60 % 60:02d}:{seq % 60:02d}+08:00",
            "mono_ns": 1_000_000 * seq,
            "boot_id": "boot-1",
            "clock_trusted": True,
            "kind": "fault" if fault else "decision",
            "outcome": "fault" if fault else OUTCOMES[seq % 4],
            "prompt": "绿码通行",
            "masked_id": None if fault else "1101**********4514",
            "pseudonym": None if fault else "ab" * 32,
            "offline": seq % 2 == 0,
            "cache_age_s": 12.5 if seq % 2 == 0 else None,
            "latency_ms": 83.0 if seq % 3 else 7,
            "detail": {"reasons": [], "tap_id": f"k1-{seq:06d}"},
            "prev_hash": prev,
        }
        event["hash"] = prev = hash_event(event)
        out.append(event)
    return out


def store(db: Path | str, device_id: str, batch: list[dict[str, Any]], received_at: str) -> Any:
    """Ingest ``batch`` as if received at ``received_at`` (``2026-11-23T00:00:07+00:00``)."""
    parsed = ingestion.parse_batch({"events": batch})
    with connect(db) as conn:
        return ingestion.ingest(conn, device_id, parsed, received_at)


def at(second: int) -> str:
    """A ``received_at`` ``second`` seconds after 2026-11-23T00:00:00Z."""
    return f"2026-11-23T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}+00:00"


def audit_app(config: ServerConfig) -> web.Application:
    """The app, with the audit read routes added if the app factory does not have them yet."""
    app = create_app(config)
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    missing = [op for op in read_views.OPERATIONS if (op.method, op.path) not in served]
    app.router.add_routes([op.route() for op in missing])
    return app


def three_kiosk_trail(db: Path | str) -> dict[str, str]:
    """Kiosks a1, a2 at site-a and b1 at site-b, 20 chained events each, stored in 4 batches
    received 100 s apart (kiosks 1 s apart); name → device_id."""
    ids = {
        "a1": kiosk(db, "SN-A1", "site-a", "gate-1"),
        "a2": kiosk(db, "SN-A2", "site-a", "gate-2"),
        "b1": kiosk(db, "SN-B1", "site-b", "gate-1"),
    }
    chained = events(1, 20)
    for i, name in enumerate(ids):
        for b in range(4):
            store(db, ids[name], chained[b * 5 : b * 5 + 5], at(100 * b + i))
    return ids
