"""Audit trail reads (issue 12, part 6): the cost of a page of 1,000 events by filter, as a
ratio to an unfiltered page, and of the chain check, on a SQLite trail of ``--kiosks`` ×
``--events`` rows (20 sites; 2 % of events have the rare outcome ``fault``).

The pages are :func:`server.audit.query.page_query`'s (migration 15's indexes); up to five
consecutive pages per filter, each from the previous cursor. A filter that matches few
events walks much of the trail per page: that is why the server reads pages on the
database's threads and not inline on the event loop (server/audit/read_views.py).

    .venv/bin/python bench/audit_read.py [--kiosks 200] [--events 1000]

Prints one line per filter, then a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from server.audit import chain, query
from server.storage.db import connect, transaction

START = datetime(2026, 11, 1, tzinfo=UTC)
_INSERT = (
    "INSERT INTO audit_events (device_id, epoch, seq, wall_time, received_at, kind, outcome,"
    " prompt, masked_id, pseudonym, offline, cache_age_s, latency_ms, boot_id, mono_ns,"
    " clock_trusted, detail, prev_hash, hash, chain_ok, flagged, wall_month)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def fill(db: Path, kiosks: int, events: int) -> None:
    """``kiosks`` kiosks at 20 sites, ``events`` events each, received a second apart."""
    with connect(db) as conn, transaction(conn):
        conn.executemany(
            "INSERT INTO devices (device_id, serial, site, gate, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(f"d{i:05d}", f"S{i}", f"site-{i % 20}", "g", "2026-11-01") for i in range(kiosks)],
        )
        for seq in range(1, events + 1):
            received = (START + timedelta(seconds=seq)).isoformat(timespec="seconds")
            conn.executemany(
                _INSERT,
                [
                    (f"d{d:05d}", "e", seq, "2026-11-01T08:00:00+08:00", received, "decision",
                     "fault" if seq % 50 == 0 else "pass", None, None, None, seq % 2, None,
                     None, "b", seq, 1, "{}", "0" * 64, "1" * 64, 1, None, 202611)
                    for d in range(kiosks)
                ],
            )  # fmt: skip


def page_ms(db: Path, filters: query.Filters) -> tuple[float, int]:
    """Mean milliseconds per page over up to five pages, and how many pages were read."""
    with connect(db) as conn:
        after = None
        pages = 0
        start = time.perf_counter()
        while pages < 5:
            sql, params = query.page_query(filters, after, 1000)
            rows = conn.execute(sql, params).fetchall()
            pages += 1
            if len(rows) < 1000:
                break
            after = query.cursor_of(query.event(rows[-1]))
        return (time.perf_counter() - start) * 1000 / pages, pages


def chain_ms(db: Path, device_id: str) -> float:
    with connect(db) as conn:
        start = time.perf_counter()
        check = chain.ChainCheck(device_id, [], [])
        after = None
        while True:
            sql, params = chain.page_query(device_id, after)
            rows = conn.execute(sql, params).fetchall()
            if not rows:
                break
            check.feed(rows)
            after = chain.last_position(rows)
        return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kiosks", type=int, default=200)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "audit.db"
        fill(db, args.kiosks, args.events)
        cases: dict[str, query.Filters] = {
            "all": query.Filters(),
            "one kiosk": query.Filters(device="d00007"),
            "one site of 20": query.Filters(sites=("site-3",)),
            "2 % outcome": query.Filters(outcome="fault"),
            "one site and 2 % outcome": query.Filters(sites=("site-3",), outcome="fault"),
        }
        results: dict[str, Any] = {"rows": args.kiosks * args.events}
        base = None
        for name, filters in cases.items():
            ms, pages = page_ms(db, filters)
            base = base or ms
            results[name] = {
                "ms_per_page": round(ms, 1),
                "pages": pages,
                "ratio": round(ms / base, 1),
            }
            print(f"{name:<26} {ms:8.1f} ms/page ({pages} page(s)), {ms / base:5.1f} × unfiltered")
        ms = chain_ms(db, "d00007")
        results["chain_ms_per_1000_events"] = round(ms * 1000 / args.events, 1)
        print(f"chain check of one kiosk's {args.events} events: {ms:.0f} ms (every one a break)")
        print(json.dumps(results))


if __name__ == "__main__":
    main()
