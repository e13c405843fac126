"""N kiosk sockets held by the server while taps fan out to B open boards (issue 12, part 9).

The city's fleet (21,390 kiosks) each holds its command WebSocket (``GET /v1/device/ws``)
to ``kiosk server run --workers W`` on PostgreSQL (events cross the worker processes through
``LISTEN``/``NOTIFY``), while B boards hold ``GET /v1/guard/events``: guards spread over the
40 sites (each sees its site's events) and ``--admins`` admins (every event). Then a subset
of the kiosks taps (``POST /v1/verify``) at a steady ``--rate`` for ``--seconds``, and every
``tap`` event a board receives is matched to the tap that caused it (its kiosk and the
person's masked id: each kiosk's successive taps name different people,
bench/boardfanout_taps.py) to time it from the moment the tap was sent to its arrival at
the board (one host, one clock).

Reported: kiosks held (and what refused the others), the server workers' memory (RSS and
PSS from /proc) before and after the kiosks connected → KiB per kiosk connection, the same
for the boards, event latency p50/p99/max over every board delivery (target p99 ≤ 2 s),
deliveries missing (``dropped``), and in the same run two baselines: the same taps to the
same boards before any kiosk connected (what the held sockets add to the latency, under the
same machine load), and as many idle plain aiohttp WebSockets on a server doing nothing else
(bench/boardfanout_bare.py), a floor for the memory per connection.

The machine is shared (other processes, PostgreSQL, the bench's own clients), so each tap
phase also reports the server workers' CPU, how long their threads waited for a CPU
(``/proc/…/schedstat``: the machine's share of the latency), their event loops' lag (a probe
in the bench's server wrapper) and the load average; ``--profile`` adds a py-spy of each
worker.

The shipped limits admit fewer: ``[limits] device_inflight`` (4,096 per worker) counts each
held socket and board stream as a request in flight, and the event bus serves at most 64
streams per worker. ``--config`` (a TOML with ``[limits] device_inflight``) and
``--max-streams`` lift them to measure the fan-out itself; ``--lift-limits`` does both
(``device_inflight`` 1,000,000; streams per worker: the boards and 16 more, for the
server's own subscribers such as the command hub).

Set-up, as bench/fleet_load.py: the fleet is registered with its own keys and session tokens
minted in bulk (bench/fleetload_setup.py); the boards' people are made in the database with
tokens minted likewise, except ``--logins`` of them who log in over ``POST /v1/login``
(argon2 and the login throttle: 2/s for the whole server). Kiosk sockets are spread over
``--clients`` processes (a process holds at most its file limit, 20,000 here), each from its
own loopback address. The server is bench/boardfanout_server.py: ``kiosk server run``
itself, plus the command channel and guard stream routes while server/app.py does not wire
them.

    .venv/bin/python bench/board_fanout.py                                  # the city
    .venv/bin/python bench/board_fanout.py --lift-limits --profile
    .venv/bin/python bench/board_fanout.py --kiosks 2000 --boards 50 --seconds 10

The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boardfanout_accounts as accounts  # bench/ is on the path when run as a script
import boardfanout_match as match
import fleetload_setup as setup
from boardfanout_procs import (
    Child,
    hottest,
    log_summary,
    loop_lags,
    memory_kib,
    profile,
    schedstat_s,
    start_server,
    stop_group,
    worker_pids,
)

from core.idnumbers import mask
from server.storage.db import connect

CITY = 21_390
CONNECT_TIMEOUT_S = 600.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kiosks", type=int, default=CITY, help="kiosk sockets to hold")
    parser.add_argument("--boards", type=int, default=200, help="open board streams")
    parser.add_argument("--admins", type=int, default=10, help="of the boards, admins")
    parser.add_argument("--seconds", type=float, default=30.0, help="taps for this long")
    parser.add_argument("--rate", type=float, default=20.0, help="taps per second, all kiosks")
    parser.add_argument("--tappers", type=int, help="kiosks that tap (default rate × 10)")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--database", help="an empty PostgreSQL database URL (default: own)")
    parser.add_argument("--clients", type=int, help="kiosk client processes (default ≥ 2)")
    parser.add_argument("--concurrency", type=int, default=64, help="connects at once each")
    parser.add_argument("--people", type=int, default=500, help="demo people who tap")
    parser.add_argument("--logins", type=int, default=2, help="boards logging in for real")
    parser.add_argument(
        "--hold-seconds", type=float, default=10.0, help="window for the CPU of holding"
    )
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait after taps")
    parser.add_argument("--max-streams", type=int, help="event streams per worker (bus ceiling)")
    parser.add_argument("--config", help="server TOML configuration (e.g. [limits])")
    parser.add_argument(
        "--lift-limits",
        action="store_true",
        help="[limits] device_inflight and the streams per worker out of the way",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare baseline")
    parser.add_argument(
        "--no-empty-phase", action="store_true", help="skip the taps before the kiosks connect"
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy each worker while the taps run"
    )
    return parser.parse_args(argv)


def kib_per(before: dict[str, int], after: dict[str, int], count: int) -> dict[str, float]:
    if count <= 0:
        return {"rss": math.nan, "pss": math.nan}
    return {
        "rss": round((after["rss_kib"] - before["rss_kib"]) / count, 1),
        "pss": round((after["pss_kib"] - before["pss_kib"]) / count, 1),
    }


def cpu_cores(pids: list[int], seconds: float) -> float:
    """The cores ``pids`` use over the next ``seconds``."""
    cpu0, wall0 = setup.process_cpu_s(pids), time.perf_counter()
    time.sleep(seconds)
    return round((setup.process_cpu_s(pids) - cpu0) / (time.perf_counter() - wall0), 2)


def hold_kiosks(url: str, tokens: list[str], clients: int, concurrency: int) -> list[Child]:
    """Start the kiosk client processes and wait until each has tried all its kiosks."""
    children = [
        Child(
            "boardfanout_kiosks.py",
            {
                "url": url,
                "tokens": tokens[c::clients],
                "source_ip": f"127.0.0.{10 + c}",
                "concurrency": concurrency,
            },
        )
        for c in range(clients)
    ]
    for child in children:
        ready = child.wait_for("ready", CONNECT_TIMEOUT_S)
        print(f"  kiosk client: {ready}", flush=True)
    return children


def connected(children: list[Child]) -> tuple[int, dict[str, int]]:
    held, failed = 0, dict[str, int]()
    for child in children:
        held += int(child.last["connected"])
        for reason, count in child.last["failed"].items():
            failed[reason] = failed.get(reason, 0) + int(count)
    return held, failed


def links_per_process(database: str) -> list[int]:
    """Kiosk sockets each server process recorded (``kiosk_links``), largest first."""
    with connect(database) as conn:
        rows = conn.execute("SELECT process, COUNT(*) FROM kiosk_links GROUP BY process")
        return sorted((int(n) for _, n in rows.fetchall()), reverse=True)


def server_phase(args: argparse.Namespace, database: str, tmp: Path) -> dict[str, Any]:
    """Fleet, boards and taps against the real server; its figures."""
    started = time.perf_counter()
    fleet = setup.prepare_fleet(database, args.kiosks, args.people, 0)
    boards = accounts.make_boards(database, args.boards, args.admins, setup.SITES)
    print(
        f"{args.kiosks} kiosks, {args.boards} board accounts in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    if args.lift_limits:
        lifted = tmp / "limits.toml"
        lifted.write_text("[limits]\ndevice_inflight = 1000000\n")
        args.config = args.config or str(lifted)
        args.max_streams = args.max_streams or args.boards + 16  # the hub subscribes too
    port = setup.free_port()
    extra = [
        *(["--max-streams", str(args.max_streams)] if args.max_streams else []),
        *(["--config", args.config] if args.config else []),
    ]
    server = start_server(database, port, args.workers, extra, tmp / "server.log")
    url = f"http://127.0.0.1:{port}"
    children: list[Child] = []
    try:
        accounts.real_logins(url, boards, args.logins)
        pids = worker_pids(server)
        idle = memory_kib(pids)
        empty = None
        if not args.no_empty_phase:  # the same taps and boards with no kiosk socket held
            empty = fan_out(args, url, fleet, boards, (pids, []), tmp, "empty")
            print(f"  without kiosks: {phase_line(empty)}", flush=True)
        started = time.perf_counter()
        children = hold_kiosks(
            url + "/v1/device/ws",
            [t for _, t in fleet.kiosks],
            args.clients or max(2, math.ceil(args.kiosks / 8000)),
            args.concurrency,
        )
        connect_s = time.perf_counter() - started
        time.sleep(3.0)  # the last attaches' database writes and events settle
        held, failed = connected(children)
        with_kiosks = memory_kib(pids)
        hold_cpu = cpu_cores(pids, args.hold_seconds)
        per_process = links_per_process(database)
        print(
            f"  {held} kiosks held in {connect_s:.1f} s, refused {failed}; "
            f"per process {per_process}; memory {idle} → {with_kiosks}; "
            f"holding them costs {hold_cpu} cores",
            flush=True,
        )
        client_pids = [child.proc.pid for child in children]
        events = fan_out(args, url, fleet, boards, (pids, client_pids), tmp, "held")
        print(f"  with the kiosks: {phase_line(events)}", flush=True)
        still = [child.stop("still_open") for child in children]
        close_codes: dict[str, int] = {}
        for answer in still:
            for code, n in answer["close_codes"].items():
                close_codes[code] = close_codes.get(code, 0) + int(n)
        with_boards = events.pop("memory_with_boards")
        return {
            "kiosks": held,
            "kiosks_refused": failed,
            "connect_s": round(connect_s, 1),
            "links_per_process": per_process,
            "kiosks_still_open": sum(int(s["still_open"]) for s in still),
            "kiosks_closed_early": sum(int(s["closed_early"]) for s in still),
            "close_codes": close_codes,
            "hold_cpu_cores": hold_cpu,
            "memory_idle": idle,
            "memory_with_kiosks": with_kiosks,
            "memory_with_boards": with_boards,
            "kib_per_kiosk": kib_per(idle, with_kiosks, held),
            "kib_per_board": kib_per(with_kiosks, with_boards, events["boards"]),
            **events,
            "without_kiosks": empty,
        }
    finally:
        stop_group(server)
        for child in children:
            child.kill()
        for line in log_summary(tmp / "server.log"):
            print(f"  server log: {line}", flush=True)


def fan_out(
    args: argparse.Namespace,
    url: str,
    fleet: setup.Fleet,
    boards: list[accounts.Board],
    watched: tuple[list[int], list[int]],
    tmp: Path,
    tag: str,
) -> dict[str, Any]:
    """Open the boards, tap, collect what every board received; the delivery figures.
    ``watched``: the server workers' and the kiosk clients' pids (their CPU is reported);
    ``tag`` names the phase (its taps' ids; only the ``held`` phase is profiled)."""
    pids, client_pids = watched
    watcher = Child(
        "boardfanout_boards.py",
        {"url": url + "/v1/guard/events", "tokens": [b.token for b in boards]},
    )
    try:
        ready = watcher.wait_for("ready", 120)
        time.sleep(1.0)
        with_boards = memory_kib(pids)
        print(f"  boards: {ready}; memory {with_boards}", flush=True)
        people = match.unique_masks(fleet.ids)
        tappers = fleet.kiosks[: args.tappers or max(1, int(args.rate * 10))]
        load0, since, sched0 = os.getloadavg()[0], time.time(), schedstat_s(pids)
        cpu0, wall0 = setup.process_cpu_s(pids), time.perf_counter()
        client0 = setup.process_cpu_s(client_pids)
        spies = [
            (pid, profile(pid, args.seconds, tmp / f"spy-{pid}.txt"))
            for pid in (pids if args.profile and tag == "held" else [])
        ]
        taps = Child(
            "boardfanout_taps.py",
            {
                "url": url,
                "tappers": tappers,
                "ids": [fleet.ids[i] for i in people],
                "rate": args.rate,
                "seconds": args.seconds,
                "run": f"bf{os.getpid()}{tag}",
            },
        )
        sent = taps.wait_for("sent", args.seconds + 120)
        wall = time.perf_counter() - wall0
        lags = loop_lags(tmp, since, time.time())
        sched = [round((b - a) / wall, 2) for a, b in zip(sched0, schedstat_s(pids), strict=True)]
        cpu = (setup.process_cpu_s(pids) - cpu0) / wall
        client_cpu = (setup.process_cpu_s(client_pids) - client0) / wall
        load = [round(load0, 2), round(os.getloadavg()[0], 2)]
        time.sleep(args.drain)
        received = watcher.stop("arrivals", 120)
        for pid, spy in spies:
            if spy is not None:
                spy.wait(timeout=60)
                print(f"  py-spy of worker {pid} while tapping (own time):", flush=True)
                for line in hottest(tmp / f"spy-{pid}.txt"):
                    print(f"    {line}", flush=True)
    finally:
        watcher.kill()
    sites = match.sites_of(fleet.kiosks, setup.SITES)
    masks = [mask(fleet.ids[i]) for i in people]
    figures = match.deliveries(sent["sent"], masks, sites, boards, ready["opened"], received)
    return {
        "boards": int(ready["open"]),
        "boards_refused": ready["refused"],
        "memory_with_boards": with_boards,
        "server_cpu_cores": round(cpu, 2),
        "kiosk_clients_cpu_cores": round(client_cpu, 2),
        "server_threads_ran_waited_per_s": sched,
        "server_loop_lag": lags,
        "loadavg_1m_during_taps": load,
        "tap_p99_ms": match.ms(match.percentile(sent["latencies_s"], 0.99)),
        "tap_statuses": dict(Counter(str(status) for *_, status in sent["sent"])),
        "kinds_received": received["kinds"],
        "dropped_notices": received["dropped"],
        "streams_ended_early": received["ended_early"],
        **figures,
    }


def phase_line(figures: dict[str, Any]) -> str:
    """One phase's deliveries and latency in a line, with the machine's share of blame."""
    return (
        f"delivered {figures['delivered']}/{figures['expected']}, latency {figures['latency']}"
        f", server threads ran/waited for a CPU {figures['server_threads_ran_waited_per_s']}"
        f" s/s, loop lag {figures['server_loop_lag']}, load {figures['loadavg_1m_during_taps']}"
    )


def bare_phase(count: int, workers: int, clients: int, concurrency: int) -> dict[str, Any]:
    """As many idle WebSockets on the bare aiohttp server; its memory per socket."""
    port = setup.free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(setup.ROOT / "bench" / "boardfanout_bare.py"),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=setup.ROOT,
        start_new_session=True,
    )
    setup.wait_port(port, proc)
    children: list[Child] = []
    try:
        time.sleep(1.0)
        pids = setup.children(proc.pid)
        idle = memory_kib(pids)
        children = hold_kiosks(
            f"http://127.0.0.1:{port}/v1/device/ws", ["-"] * count, clients, concurrency
        )
        time.sleep(3.0)
        held, failed = connected(children)
        after = memory_kib(pids)
        return {
            "sockets": held,
            "refused": failed,
            "memory_idle": idle,
            "memory_with_sockets": after,
            "kib_per_socket": kib_per(idle, after, held),
        }
    finally:
        for child in children:
            child.kill()
        stop_group(proc)


def summary(result: dict[str, Any], bare: dict[str, Any] | None) -> dict[str, Any]:
    out = {
        "kiosks": result["kiosks"],
        "boards": result["boards"],
        "rss_per_kiosk_kib": result["kib_per_kiosk"]["rss"],
        "pss_per_kiosk_kib": result["kib_per_kiosk"]["pss"],
        "event_p99_ms": result["latency"]["p99_ms"],
        "event_p50_ms": result["latency"]["p50_ms"],
        "event_max_ms": result["latency"]["max_ms"],
        "delivered": result["delivered"],
        "dropped": result["dropped"],
    }
    empty = result.get("without_kiosks")
    if empty is not None:
        out["event_p99_ms_without_kiosks"] = empty["latency"]["p99_ms"]
    if bare is not None:
        out["bare_rss_per_socket_kib"] = bare["kib_per_socket"]["rss"]
        base = bare["kib_per_socket"]["rss"]
        out["rss_vs_bare"] = round(out["rss_per_kiosk_kib"] / base, 2) if base > 0 else None
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; server, "
        "PostgreSQL, kiosks, boards and taps share them",
        flush=True,
    )
    pg: setup.BenchPg | None = None
    with tempfile.TemporaryDirectory(prefix="board-fanout-") as tmp_name:
        try:
            database = args.database
            if database is None:
                pg = setup.BenchPg()
                pg.start()
                database = pg.new_database(migrated=False)
            result = server_phase(args, database, Path(tmp_name))
        finally:
            if pg is not None:
                pg.close()
    print(json.dumps(result, indent=1), flush=True)
    bare = None
    if not args.no_baseline:
        clients = args.clients or max(2, math.ceil(args.kiosks / 8000))
        bare = bare_phase(result["kiosks"], args.workers, clients, args.concurrency)
        print(f"bare: {json.dumps(bare)}", flush=True)
    out = summary(result, bare)
    out["seconds"] = round(time.perf_counter() - started)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
