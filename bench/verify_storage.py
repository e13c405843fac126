"""The verify path's two storage steps on SQLite, each done the ways it could be, side by side.

1. **The person read** (the four local sources, ``server.verify.sources.PERSON_SQL``):
   inline on the event loop (``db.fetch``, what the server does) against a hop to the
   database thread per read (``db.run``), and against the four statements it replaced.
2. **The replay claim** (``server.verify.claims``): an inline autocommit insert on the loop,
   one thread hop per claim, and batches of 64 claims in flight (as under 64 connections)
   written inline (what the server does) or on the database thread.

Times are wall-clock microseconds per operation in this process, measured in one run; the
last line printed is JSON.

    .venv/bin/python bench/verify_storage.py [--people 2000] [--reads 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from server.storage.connection import Connection
from server.storage.db import Database, open_database
from server.verify.demodata import load_demo_data
from server.verify.replay import CLAIM_SQL, TapReplay
from server.verify.sources import PERSON_SQL

FOUR = (
    "SELECT colour, reason, updated_at FROM health_codes WHERE id_number = ?",
    "SELECT result, sampled_at, lab FROM nat_results WHERE id_number = ?"
    " ORDER BY sampled_at DESC LIMIT 1",
    "SELECT COUNT(*), MAX(vaccinated_at) FROM vaccinations WHERE id_number = ?",
    "SELECT flagged, area, updated_at FROM travel WHERE id_number = ?",
)


def read_one(conn: Connection, number: str) -> list[Any]:
    return conn.execute(PERSON_SQL, (number,) * 4).fetchall()


def read_four(conn: Connection, number: str) -> list[Any]:
    return [conn.execute(sql, (number,)).fetchall() for sql in FOUR]


async def per_op(n: int, step: Callable[[int], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    for i in range(n):
        await step(i)
    return round((time.perf_counter() - started) / n * 1e6, 1)


async def reads(db: Database, people: list[str], n: int) -> dict[str, float]:
    def pick(i: int) -> str:
        return people[i % len(people)]

    async def inline_four(i: int) -> None:
        for sql in FOUR:
            await db.fetch(sql, (pick(i),))

    return {
        "inline_one_statement_us": await per_op(n, lambda i: db.fetch(PERSON_SQL, (pick(i),) * 4)),
        "inline_four_statements_us": await per_op(n, inline_four),
        "thread_one_statement_us": await per_op(n, lambda i: db.run(read_one, pick(i))),
        "thread_four_statements_us": await per_op(n, lambda i: db.run(read_four, pick(i))),
    }


async def claims(db: Database, n: int) -> dict[str, float]:
    inline = sqlite3.connect(db.target, isolation_level=None)
    inline.execute("PRAGMA busy_timeout=0")
    now = int(time.time())

    async def inline_claim(i: int) -> None:
        inline.execute(CLAIM_SQL, ("d", f"inline-{i}", now + 60, now))

    def claim(conn: Connection, tap: str) -> int:
        return int(conn.execute(CLAIM_SQL, ("d", tap, now + 60, now)).rowcount)

    result = {
        "inline_autocommit_us": await per_op(n, inline_claim),
        "thread_hop_each_us": await per_op(n, lambda i: db.run(claim, f"hop-{i}")),
    }
    inline.close()
    for name, inline_batches in (("inline_batches_us", True), ("thread_batches_us", False)):
        replay = TapReplay(db, ttl_s=60, recent=16, inline=inline_batches)
        started = time.perf_counter()
        for j in range(n // 64):
            await asyncio.gather(*(replay.claim("d", f"{name}-{j}-{k}") for k in range(64)))
        result[name] = round((time.perf_counter() - started) / (n // 64 * 64) * 1e6, 1)
        await replay.close()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=20000)
    parser.add_argument("--claims", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="siheyi-bench-") as tmp:
        path = Path(tmp) / "siheyi.db"
        await asyncio.to_thread(load_demo_data, path, args.people)
        db = open_database(path)
        await db.open()
        try:
            people = [str(r[0]) for r in await db.fetch("SELECT id_number FROM health_codes")]
            read = await reads(db, people, args.reads)
            claim = await claims(db, args.claims)
        finally:
            await db.close()
    print(json.dumps({"read": read, "claim": claim}))


if __name__ == "__main__":
    asyncio.run(main())
