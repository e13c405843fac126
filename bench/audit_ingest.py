"""Audit ingest: the real ingestion function against a bare ``executemany`` of the same rows.

Issue 11 part 4 and DESIGN's target: audit ingest >= 50,000 events/s into SQLite, and the
server's ingestion (``server.audit.ingestion.ingest``: per-device lock, chain verification,
duplicate/conflict sorting, high-water mark, one INSERT per batch: a multi-row ``VALUES`` on
SQLite, ``unnest`` of one array per column on PostgreSQL) at >= 50 % of a bare
``executemany`` of the very rows it writes (pipelined by psycopg on PostgreSQL), into the
same table of the same database, in the same run. The events are given to ``ingest``
already parsed: the body's decoding and hashing (``parse_batch``) is bench/wire_decode.py's.
Both sides commit each batch in its own durable transaction (SQLite
``synchronous=FULL``, as the server does for audit), so the ratio is the statement work, not
a difference in fsyncs. Devices take turns (ingest, bare, bare, ingest, ...) so drift of the
machine falls on both sides alike.

Then every batch ingested is sent again (the kiosk's retry after a lost acknowledgement):
each must answer ``stored 0``, ``duplicates len(batch)`` and the same ``acked_seq``; and the
table must hold each event exactly once (count, distinct count, and a SHA-256 over every
``(device_id, seq, hash)`` in order against the one computed from the generated events).

kill -9 (``--no-kill`` to skip): another SQLite database is filled by a child process that
is killed with SIGKILL in the middle of its batches; every batch is then sent again, and the
check above must hold (nothing lost, nothing twice).

PostgreSQL: a throw-away cluster started like the tests' (tests/pgserver.py: ``fsync=off``,
``synchronous_commit=off``, so commits cost no disk flush on either side), or ``--pg-url``.

    .venv/bin/python bench/audit_ingest.py [--backends sqlite,postgresql] [--no-kill]
        [--devices 16] [--batches 25] [--batch-size 500] [--kill-devices 4] [--pg-url URL]

Prints one line per backend, then a final JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import audit
from server.audit.ingestion import AuditEvent, ingest
from server.audit.partitions import month_key
from server.storage.connection import Connection
from server.storage.db import connect, durable

TARGET_RATIO = 0.5
TARGET_SQLITE_EPS = 50_000
RECEIVED = "2026-11-23T00:00:00+00:00"
COLUMNS = (
    "device_id, epoch, seq, wall_time, received_at, kind, outcome, prompt, masked_id,"
    " pseudonym, offline, cache_age_s, latency_ms, boot_id, mono_ns, clock_trusted, detail,"
    " prev_hash, hash, chain_ok, flagged, wall_month"
)
BARE = f"INSERT INTO audit_events ({COLUMNS}) VALUES ({', '.join(['?'] * 22)})"

Batch = list[AuditEvent]


def journal(device: str, events: int, size: int) -> list[Batch]:
    """One kiosk's chained events in batches of ``size``, as parse_batch would give them.

    The hashes are chained but made cheaply (not the canonical event hash): ingestion
    compares hashes, it does not recompute them (parse_batch does, measured by
    bench/wire_decode.py).
    """
    prev, out = audit.GENESIS_HASH, []
    epoch = hashlib.sha256(device.encode()).hexdigest()[:32]
    for seq in range(1, events + 1):
        digest = hashlib.sha256(f"{device}:{seq}:{prev}".encode()).hexdigest()
        out.append(
            AuditEvent(
                epoch=epoch,
                seq=seq,
                wall_time=f"2026-11-23T08:{seq // 60 % 60:02d}:{seq % 60:02d}.123456+08:00",
                mono_ns=123_456_789_012 + seq,
                boot_id="3f9a0b2e-77c1-4d7e-9a51-0b2e3f9a77c1",
                clock_trusted=True,
                kind="decision",
                outcome="pass",
                prompt="绿码通行",
                masked_id="1101**********4514",
                pseudonym="9f2c" * 16,
                offline=seq % 7 == 0,
                cache_age_s=12.5 if seq % 7 == 0 else None,
                latency_ms=5.1,
                detail_json=json.dumps({"reasons": [], "tap_id": f"{device}-{seq:06d}"}),
                prev_hash=prev,
                hash=digest,
                hash_ok=True,
            )
        )
        prev = digest
    return [out[i : i + size] for i in range(0, len(out), size)]


def bare_row(device: str, ev: AuditEvent) -> tuple[Any, ...]:
    """The row ``ingest`` writes for ``ev``, column for column."""
    return (
        device, ev.epoch, ev.seq, ev.wall_time, RECEIVED, ev.kind, ev.outcome, ev.prompt,
        ev.masked_id, ev.pseudonym, int(ev.offline), ev.cache_age_s, ev.latency_ms,
        ev.boot_id, ev.mono_ns, int(ev.clock_trusted), ev.detail_json, ev.prev_hash,
        ev.hash, 1, None, month_key(ev.wall_time),
    )  # fmt: skip


def bare_rows(device: str, batch: Batch) -> list[tuple[Any, ...]]:
    return [bare_row(device, ev) for ev in batch]


def store_bare(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    with durable(conn):
        conn.executemany(BARE, rows)


@dataclass
class Fleet:
    """The devices of one side and their batches."""

    batches: dict[str, list[Batch]]

    def events(self) -> int:
        return sum(len(b) for bs in self.batches.values() for b in bs)

    def digest(self) -> str:
        """SHA-256 over every (device_id, seq, hash), devices and seqs in order."""
        h = hashlib.sha256()
        for device in sorted(self.batches):
            for batch in self.batches[device]:
                for ev in batch:
                    h.update(f"{device}|{ev.seq}|{ev.hash}\n".encode())
        return h.hexdigest()


def fleet(prefix: str, devices: int, batches: int, size: int) -> Fleet:
    return Fleet(
        {
            f"{prefix}-{d:04d}": journal(f"{prefix}-{d:04d}", batches * size, size)
            for d in range(devices)
        }
    )


def timed_round(conn: Connection, ing: Fleet, bare: Fleet) -> tuple[float, float]:
    """Each device's batches, ingest and bare in turns; the seconds each side took."""
    t_ingest = t_bare = 0.0
    pairs = zip(sorted(ing.batches), sorted(bare.batches), strict=True)
    for turn, (i_dev, b_dev) in enumerate(pairs):
        rows = [bare_rows(b_dev, batch) for batch in bare.batches[b_dev]]

        def run_ingest(i_dev: str = i_dev) -> float:
            start = time.perf_counter()
            for batch in ing.batches[i_dev]:
                ingest(conn, i_dev, batch, RECEIVED)
            return time.perf_counter() - start

        def run_bare(rows: list[list[tuple[Any, ...]]] = rows) -> float:
            start = time.perf_counter()
            for batch_rows in rows:
                store_bare(conn, batch_rows)
            return time.perf_counter() - start

        if turn % 2 == 0:
            t_ingest += run_ingest()
            t_bare += run_bare()
        else:
            t_bare += run_bare()
            t_ingest += run_ingest()
    return t_ingest, t_bare


def replay(conn: Connection, ing: Fleet) -> tuple[float, list[str]]:
    """Send every batch again; seconds taken and every answer that was not a pure duplicate."""
    wrong: list[str] = []
    start = time.perf_counter()
    for device, batches in ing.batches.items():
        last = batches[-1][-1].seq
        for batch in batches:
            answer = ingest(conn, device, batch, RECEIVED)
            if (answer.stored, answer.duplicates, answer.acked_seq) != (0, len(batch), last):
                wrong.append(f"{device} {batch[0].seq}: {answer.to_json()}")
    return time.perf_counter() - start, wrong


def check(conn: Connection, ing: Fleet, prefix: str) -> dict[str, Any]:
    """What the table holds of ``ing``: lost and duplicated events, and the digest."""
    like = f"{prefix}-%"
    total, distinct = conn.execute(
        "SELECT count(*), count(DISTINCT device_id || ':' || seq) FROM audit_events"
        " WHERE device_id LIKE ?",
        (like,),
    ).fetchone()
    h = hashlib.sha256()
    for device, seq, hash_ in conn.execute(
        "SELECT device_id, seq, hash FROM audit_events WHERE device_id LIKE ?"
        " ORDER BY device_id, seq",
        (like,),
    ):
        h.update(f"{device}|{seq}|{hash_}\n".encode())
    acked = conn.execute(
        "SELECT count(*) FROM audit_progress WHERE device_id LIKE ? AND acked_seq = ?",
        (like, _events_per(ing)),
    ).fetchone()[0]
    conflicts = conn.execute(
        "SELECT count(*) FROM audit_conflicts WHERE device_id LIKE ?", (like,)
    ).fetchone()[0]
    expected = ing.events()
    return {
        "events": expected,
        "stored": int(total),
        "lost": expected - int(distinct),
        "duplicated": int(total) - int(distinct),
        "conflicts": int(conflicts),
        "digest_ok": h.hexdigest() == ing.digest(),
        "acked_ok": int(acked) == len(ing.batches),
    }


def _events_per(ing: Fleet) -> int:
    first = next(iter(ing.batches.values()))
    return sum(len(b) for b in first)


def measure(target: str, args: argparse.Namespace) -> dict[str, Any]:
    """Ingest vs bare, replay, and the check, on one database."""
    ing = fleet("ing", args.devices, args.batches, args.batch_size)
    bare = fleet("bare", args.devices, args.batches, args.batch_size)
    warm = fleet("warm", 1, 2, args.batch_size)
    # The generated input (hundreds of thousands of objects) is not the server's: keep the
    # garbage collector from walking it again and again in the middle of either side.
    gc.collect()
    gc.freeze()
    with connect(target) as conn:
        for device, batches in warm.batches.items():  # caches, partitions, statements
            for batch in batches:
                ingest(conn, device, batch, RECEIVED)
                store_bare(conn, bare_rows(device + "b", batch))
        t_ingest, t_bare = timed_round(conn, ing, bare)
        t_replay, wrong = replay(conn, ing)
        result = check(conn, ing, "ing")
    events = ing.events()
    result.update(
        ingest_eps=round(events / t_ingest),
        bare_eps=round(events / t_bare),
        ratio=round(t_bare / t_ingest, 3),
        replay_eps=round(events / t_replay),
        replay_wrong=len(wrong),
        batch_size=args.batch_size,
    )
    for line in wrong[:5]:
        print(f"  replay answered: {line}", file=sys.stderr)
    return result


# ------------------------------------------------------------------------------ kill -9


def _child(target: str, devices: int, batches: int, size: int, done: Any) -> None:
    """Ingest every batch of the ``kill`` fleet, counting the batches committed in ``done``."""
    ing = fleet("kill", devices, batches, size)
    with connect(target) as conn:
        for device, device_batches in ing.batches.items():
            for batch in device_batches:
                ingest(conn, device, batch, RECEIVED)
                with done.get_lock():
                    done.value += 1


def kill_nine(target: str, args: argparse.Namespace) -> dict[str, Any]:
    """SIGKILL an ingesting process half-way through its batches, a random fraction of a
    batch after one committed; resend everything; check."""
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Value("i", 0)
    child = ctx.Process(
        target=_child, args=(target, args.kill_devices, args.batches, args.batch_size, done)
    )
    child.start()
    half, deadline = args.kill_devices * args.batches // 2, time.monotonic() + 60
    while done.value < 1 and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)
    first = time.monotonic()
    while done.value < half and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)
    per_batch = (time.monotonic() - first) / max(1, done.value - 1)
    time.sleep(random.uniform(0, per_batch))  # anywhere in the next batch, commit included
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    ing = fleet("kill", args.kill_devices, args.batches, args.batch_size)
    with connect(target) as conn:
        (before,) = conn.execute(
            "SELECT count(*) FROM audit_events WHERE device_id LIKE 'kill-%'"
        ).fetchone()
        stored = 0
        for device, batches in ing.batches.items():
            for batch in batches:
                stored += ingest(conn, device, batch, RECEIVED).stored
        result = check(conn, ing, "kill")
    result.update(
        committed_at_kill=done.value,
        held_at_kill=int(before),
        stored_on_resend=stored,
        exit_signal=-(child.exitcode or 0),
    )
    return result


# ------------------------------------------------------------------------------ running


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[str]:
    """``url``, or a new database on a throw-away cluster (started and removed here)."""
    if url:
        yield url
        return
    from tests.pgserver import PgCluster

    cluster = PgCluster().start()
    try:
        yield cluster.new_database()
    finally:
        cluster.close()


def line(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:<10} ingest {r['ingest_eps']:>9,} ev/s  bare {r['bare_eps']:>9,} ev/s"
        f"  ratio {r['ratio']:.3f}  replay {r['replay_eps']:>9,} ev/s"
        f"  lost {r['lost']} duplicated {r['duplicated']} digest_ok {r['digest_ok']}"
    )


def verdict(results: dict[str, Any]) -> bool:
    """Every target met and every check clean."""
    ok = True
    for name, r in results.items():
        if not isinstance(r, dict) or "ratio" not in r:
            continue
        ok &= r["ratio"] >= TARGET_RATIO and r["replay_wrong"] == 0
        ok &= r["lost"] == 0 and r["duplicated"] == 0 and r["digest_ok"] and r["acked_ok"]
        if name == "sqlite":
            ok &= r["ingest_eps"] >= TARGET_SQLITE_EPS
    kill = results.get("kill9")
    if isinstance(kill, dict):
        ok &= kill["lost"] == 0 and kill["duplicated"] == 0 and kill["digest_ok"]
    return bool(ok)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--devices", type=int, default=16)
    parser.add_argument("--batches", type=int, default=25, help="batches per device")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--pg-url", help="an existing PostgreSQL database (else a throw-away)")
    parser.add_argument(
        "--kill",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the SIGKILL check on SQLite (default: on)",
    )
    parser.add_argument("--kill-devices", type=int, default=4, metavar="N")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        if "sqlite" in backends:
            results["sqlite"] = measure(str(Path(tmp) / "bench.db"), args)
            print(line("sqlite", results["sqlite"]), flush=True)
        if "postgresql" in backends:
            with postgres(args.pg_url) as url:
                results["postgresql"] = measure(url, args)
            print(line("postgresql", results["postgresql"]), flush=True)
        if args.kill:
            results["kill9"] = kill_nine(str(Path(tmp) / "kill.db"), args)
            print(f"kill -9    {results['kill9']}", flush=True)
    results.update(target_ratio=TARGET_RATIO, target_sqlite_eps=TARGET_SQLITE_EPS)
    results["ok"] = verdict(results)
    print(json.dumps(results))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
