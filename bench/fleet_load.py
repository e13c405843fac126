"""A fleet of N kiosks against the real server: the largest N with p99 ≤ 50 ms and 0 errors.

Issue 11, part 5. For each set-up — SQLite × 1 process, SQLite × 2 processes, PostgreSQL × 2
processes — the bench builds a fresh database (demo people; ``--max-kiosks`` devices, each
with its own Ed25519 key and session token, see bench/fleetload_setup.py for how tokens are
obtained), starts ``kiosk server run`` and plays N kiosks at a fixed rate (open loop,
bench/fleetload_gen.py, in ``--generators`` processes): per kiosk a verify every 3 s (unique
tap ids), a heartbeat every 30 s and, every 2 s, an audit upload of the decision events its
journal holds (hash-chained; nothing is sent when nothing is pending, as a kiosk does;
``--idle-uploads`` sends a system event then, an upload on every tick).
It ramps N up by a factor until a step fails (verify p99 > 50 ms, or any error), then bisects.

In the same run, with the SQLite × 1 server up, wrk (64 connections, closed loop,
bench/fleet_load.lua) measures a bare aiohttp JSON echo (bench/fleetload_echo.py) and
``POST /v1/verify`` alternately: ``verify_vs_echo`` is their requests/s ratio, and
``kiosks / echo_rps`` lets runs on other machines compare (the target: 21,390 / 27,000 ≈ 0.8).

Every process shares the machine: server processes, PostgreSQL and the load generators. The
generators' CPU (getrusage) is reported beside the servers' and PostgreSQL's (/proc), each as
a fraction of one core over the measured window, so a generator near 100 % of a core would be
visible as the bottleneck.

    .venv/bin/python bench/fleet_load.py --quick     # < 3 min
    .venv/bin/python bench/fleet_load.py             # full search, 12 s steps

The plot (verify p50/p99 against kiosks, per set-up) goes to bench/fleet_load.png; it needs
matplotlib, a bench-only dependency: ``.venv/bin/pip install matplotlib`` (skipped with a
message when missing). The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fleetload_setup as setup  # bench/ is on the path; the root too, for tests.pgserver

ROOT = setup.ROOT
P99_LIMIT_MS = 50.0
SETUPS = (("sqlite1", "sqlite", 1), ("sqlite2", "sqlite", 2), ("postgres2", "postgresql", 2))


@dataclass(frozen=True)
class Plan:
    """How long and how far the search goes."""

    warmup_s: float
    step_s: float
    start: int
    growth: float
    precision: float
    max_kiosks: int
    wrk_s: int
    wrk_rounds: int
    #: A failed step is run again this many times before it counts as failed: one latency
    #: spike from a process outside the bench must not end the search.
    retries: int


QUICK = Plan(1.5, 3, 400, 2.0, 1.5, 4_000, 3, 1, 0)
FULL = Plan(3, 12, 600, 1.5, 1.08, 40_000, 8, 2, 1)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_step(
    fleet: setup.Fleet,
    ports: list[int],
    n: int,
    plan: Plan,
    generators: int,
    tag: str,
    watched: dict[str, Callable[[], list[int]]],
    idle_uploads: bool,
) -> dict[str, Any]:
    """N kiosks for one step, split over the generator processes; the merged measurements."""
    kiosks = fleet.kiosks[:n]
    procs = []
    for g in range(generators):
        spec = {
            "ports": ports,
            "kiosks": kiosks[g::generators],
            "ids": fleet.ids,
            "warmup": plan.warmup_s,
            "duration": plan.step_s,
            "connections": 512,
            "seed": g,
            "run_tag": f"{tag}g{g}",
            "idle_uploads": idle_uploads,
        }
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "fleetload_gen.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()
        procs.append(proc)
    time.sleep(0.5 + plan.warmup_s)
    pids = {name: find() for name, find in watched.items()}
    cpu0 = {name: setup.process_cpu_s(pids[name]) for name in watched}
    wall0 = time.perf_counter()
    results = []
    for proc in procs:
        assert proc.stdout is not None
        results.append(json.loads(proc.stdout.read()))
        proc.wait()
    wall = time.perf_counter() - wall0
    cpu = {
        name: round((setup.process_cpu_s(pids[name]) - cpu0[name]) / wall, 2) for name in watched
    }
    return merge(n, results, cpu)


def merge(n: int, results: list[dict[str, Any]], cpu: dict[str, float]) -> dict[str, Any]:
    """One step's figures from its generators' reports."""
    out: dict[str, Any] = {"kiosks": n}
    errors: dict[str, int] = {}
    for kind in ("verify", "heartbeat", "audit"):
        values = [v for r in results for v in r["latencies"][kind]]
        sent = sum(r["sent"][kind] for r in results)
        window = max(r["wall_s"] for r in results)
        out[kind] = {
            "rps": round(sent / window, 1),
            "p50_ms": round(percentile(values, 0.50), 2),
            "p99_ms": round(percentile(values, 0.99), 2),
            "max_ms": round(max(values, default=math.nan), 2),
        }
    for r in results:
        for key, count in r["errors"].items():
            errors[key] = errors.get(key, 0) + count
    out["errors"] = errors
    out["generator_cpu"] = [round(r["cpu_s"] / r["wall_s"], 2) for r in results]
    out["generator_max_lag_ms"] = max(r["max_lag_ms"] for r in results)
    out["cpu"] = cpu
    out["loadavg_1m"] = round(os.getloadavg()[0], 2)
    out["ok"] = not errors and out["verify"]["p99_ms"] <= P99_LIMIT_MS
    return out


def search(
    fleet: setup.Fleet,
    ports: list[int],
    plan: Plan,
    generators: int,
    name: str,
    watched: dict[str, Callable[[], list[int]]],
    idle_uploads: bool,
) -> list[dict[str, Any]]:
    """Ramp up by ``growth`` until a step fails, then bisect to ``precision``."""
    steps: list[dict[str, Any]] = []
    good, bad = 0, 0
    n = min(plan.start, plan.max_kiosks)
    while True:
        for _ in range(plan.retries + 1):
            tag = f"{name}{len(steps)}"
            step = run_step(fleet, ports, n, plan, generators, tag, watched, idle_uploads)
            steps.append(step)
            print(f"  {name}: {short(step)}", flush=True)
            if step["ok"]:
                break
            time.sleep(2)
        if step["ok"]:
            good = n
        else:
            bad = n
        if bad == 0:
            if n >= plan.max_kiosks:
                break
            n = min(plan.max_kiosks, int(n * plan.growth))
        elif good == 0:
            if n <= 10:
                break
            n = n // 2
        elif bad / good <= plan.precision:
            break
        else:
            n = int(math.sqrt(good * bad))
        time.sleep(2)  # let the server drain what a failed step left queued
    return steps


def short(step: dict[str, Any]) -> str:
    v, a = step["verify"], step["audit"]
    return (
        f"{step['kiosks']:6d} kiosks  verify {v['rps']:7.1f}/s p50 {v['p50_ms']:7.2f}"
        f" p99 {v['p99_ms']:8.2f} ms  audit p99 {a['p99_ms']:8.2f} ms  errors {step['errors']}"
        f"  cpu {step['cpu']} gen {step['generator_cpu']} lag {step['generator_max_lag_ms']} ms"
        f" load {step['loadavg_1m']}"
        f"  {'ok' if step['ok'] else 'FAIL'}"
    )


def wrk(url: str, mode: str, seconds: int, files: tuple[Path, Path]) -> float:
    """Requests/s of wrk (2 threads, 64 connections) in ``mode``; non-2xx answers are fatal."""
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{seconds}s", "-s", str(ROOT / "bench" / "fleet_load.lua"),
         url, "--", mode, str(files[0]), str(files[1])],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out:
        raise SystemExit(f"wrk {mode}: errors\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match is not None, out
    return float(match.group(1))


def echo_vs_verify(fleet: setup.Fleet, port: int, plan: Plan, tmp: Path) -> dict[str, float]:
    """Interleaved wrk runs of the echo and of verify on the SQLite × 1 server."""
    tokens, ids = tmp / "tokens.txt", tmp / "ids.txt"
    tokens.write_text("".join(f"{t}\n" for _, t in fleet.kiosks[:256]))
    ids.write_text("".join(f"{i}\n" for i in fleet.ids))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/verify",
        json.dumps(
            {"tap_id": "size-probe", "credential": {"kind": "id_card", "id_number": fleet.ids[0]}}
        ).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {fleet.kiosks[-1][1]}"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer_bytes = len(resp.read())
    echo, echo_port = setup.start_echo(answer_bytes)
    try:
        echo_runs, verify_runs = [], []
        for _ in range(plan.wrk_rounds):
            echo_runs.append(
                wrk(f"http://127.0.0.1:{echo_port}", "echo", plan.wrk_s, (tokens, ids))
            )
            verify_runs.append(wrk(f"http://127.0.0.1:{port}", "verify", plan.wrk_s, (tokens, ids)))
    finally:
        setup.stop([echo])
    echo_rps, verify_rps = max(echo_runs), max(verify_runs)
    print(f"  wrk: echo {echo_runs} req/s, verify {verify_runs} req/s", flush=True)
    return {"echo_rps": round(echo_rps), "verify_rps": round(verify_rps)}


def run_setup(
    name: str, backend: str, processes: int, plan: Plan, args: argparse.Namespace, tmp: Path,
    pg: setup.BenchPg | None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:  # fmt: skip
    """One set-up from a fresh database: its search steps (and wrk figures for sqlite1)."""
    database = str(tmp / f"{name}.db") if pg is None else pg.new_database(migrated=False)
    started = time.perf_counter()
    fleet = setup.prepare_fleet(database, plan.max_kiosks, args.people, args.handshakes)
    print(
        f"{name}: {plan.max_kiosks} kiosks provisioned in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    procs, ports = setup.start_servers(database, processes, tmp)
    wrk_figures: dict[str, float] = {}
    try:
        print(f"  {setup.handshake(fleet, ports[0])} kiosks got their token by the real handshake")
        watched: dict[str, Callable[[], list[int]]] = {
            "server": lambda: [p for proc in procs for p in setup.children(proc.pid)]
        }
        if pg is not None:
            watched["postgres"] = lambda: setup.postgres_pids(pg)
        if name == "sqlite1":
            wrk_figures = echo_vs_verify(fleet, ports[0], plan, tmp)
        steps = search(fleet, ports, plan, args.generators, name, watched, args.idle_uploads)
    finally:
        setup.stop(procs)
    return steps, wrk_figures


def best(steps: list[dict[str, Any]]) -> dict[str, Any]:
    good = [s for s in steps if s["ok"]]
    if not good:
        return {"kiosks": 0, "verify_p99_ms": None}
    top = max(good, key=lambda s: s["kiosks"])
    return {
        "kiosks": top["kiosks"],
        "verify_p99_ms": top["verify"]["p99_ms"],
        "verify_rps": top["verify"]["rps"],
        "audit_p99_ms": top["audit"]["p99_ms"],
        "heartbeat_p99_ms": top["heartbeat"]["p99_ms"],
        "cpu": top["cpu"],
        "generator_cpu": top["generator_cpu"],
    }


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is missing (.venv/bin/pip install matplotlib)", flush=True)
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, steps in results.items():
        by_n: dict[int, dict[str, Any]] = {}
        for step in steps:  # of a step run twice, the attempt the search went by (the better)
            kept = by_n.get(step["kiosks"])
            if kept is None or step["verify"]["p99_ms"] < kept["verify"]["p99_ms"]:
                by_n[step["kiosks"]] = step
        ordered = [by_n[n] for n in sorted(by_n)]
        xs = [s["kiosks"] for s in ordered]
        (line,) = ax.plot(xs, [s["verify"]["p99_ms"] for s in ordered], "o-", label=f"{name} p99")
        ax.plot(
            xs, [s["verify"]["p50_ms"] for s in ordered], "x--", color=line.get_color(),
            label=f"{name} p50",
        )  # fmt: skip
    ax.axhline(P99_LIMIT_MS, color="grey", linestyle=":", label="50 ms")
    ax.axvline(21_390, color="red", linestyle=":", label="city peak 21,390")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("kiosks (verify every 3 s, heartbeat 30 s, audit upload 2 s; log)")
    ax.set_ylabel("verify latency, ms (log)")
    ax.set_title("bench/fleet_load.py: verify latency against fleet size (2 cores, all shared)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short steps, coarse search (< 3 min)")
    parser.add_argument("--generators", type=int, default=2, help="load-generator processes")
    parser.add_argument("--people", type=int, default=2000, help="demo people to verify")
    parser.add_argument("--handshakes", type=int, default=20, help="kiosks doing the real session")
    parser.add_argument(
        "--idle-uploads",
        action="store_true",
        help="upload every 2 s even with nothing pending (a system event), unlike a kiosk",
    )
    parser.add_argument("--max-kiosks", type=int, help="upper bound of the search")
    parser.add_argument("--only", choices=[s[0] for s in SETUPS], action="append")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "fleet_load.png")
    parser.add_argument("--steps-json", type=Path, help="also write every step's figures here")
    parser.add_argument("--replot", type=Path, metavar="JSON", help="only redraw a --steps-json")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text())["steps"], args.plot)
        return
    plan = QUICK if args.quick else FULL
    if args.max_kiosks:
        plan = Plan(**{**plan.__dict__, "max_kiosks": args.max_kiosks})
    results: dict[str, list[dict[str, Any]]] = {}
    figures: dict[str, float] = {}
    started = time.perf_counter()
    print(
        f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
        " (the server, PostgreSQL and the generators share them, with whatever else runs)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="fleet-load-") as tmp_name:
        tmp = Path(tmp_name)
        pg: setup.BenchPg | None = None
        try:
            for name, backend, processes in SETUPS:
                if args.only and name not in args.only and name != "sqlite1":
                    continue
                if backend == "postgresql" and pg is None:
                    pg = setup.BenchPg()
                    pg.start()
                steps, wrk_figures = run_setup(
                    name, backend, processes, plan, args, tmp, pg if backend != "sqlite" else None
                )
                results[name] = steps
                figures.update(wrk_figures)
        finally:
            if pg is not None:
                pg.close()
    plot(results, args.plot)
    if args.steps_json:
        args.steps_json.write_text(json.dumps({"steps": results, "wrk": figures}, indent=1))
    summary: dict[str, Any] = {
        "echo_rps": figures.get("echo_rps"),
        "verify_rps": figures.get("verify_rps"),
        "verify_vs_echo": round(figures["verify_rps"] / figures["echo_rps"], 3)
        if figures
        else None,
    }
    for name, steps in results.items():
        summary[name] = best(steps)
        if figures:
            summary[name]["kiosks_per_echo_rps"] = round(
                summary[name]["kiosks"] / figures["echo_rps"], 3
            )
    summary["mode"] = "quick" if args.quick else "full"
    summary["idle_uploads"] = args.idle_uploads
    summary["seconds"] = round(time.perf_counter() - started)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
