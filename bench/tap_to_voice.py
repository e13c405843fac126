"""Tap → voice latency through the real agent, online, black-holed and with the circuit open.

Every tap goes through the real path: the simulated SAM on a pty, the agent's card reader,
verifier, cache, voice (pre-rendered clips played with `aplay -D null`, a real process per
prompt) and journal; the server is the real aiohttp app on SQLite over loopback. Latency is
measured by the agent from "credential complete" (the read-base reply fully received) to
"playback started".

Cases, measured in one run:
  online        the server answers
  blackholed    the server accepts TCP and never answers (circuit breaker disabled, so every
                tap waits the full deadline, then decides from the cache)
  circuit_open  the server is black-holed and the circuit is open: taps decide at cache speed

Targets (DESIGN.md): online p99 ≤ 150 ms; black-holed max ≤ deadline + 100 ms;
circuit-open p99 ≤ 50 ms; no tap without a prompt.

    .venv/bin/python bench/tap_to_voice.py [--taps 40] [--deadline 1.2] [--player aplay:null]
        [--cases online,blackholed,circuit_open] [--workdir DIR]

A slow SD card: the decision is durable in the journal before the prompt starts, so every
fsync of the kiosk's state files is on the tap's path. `--workdir` makes their paths known, so
strace can delay exactly those fsyncs (not the server's, which shares this process):

    strace -f -qq -o /dev/null -e signal=none -e trace=fsync,fdatasync \
      -e inject=fsync:delay_exit=30000 -e inject=fdatasync:delay_exit=30000 \
      -P W/kiosk-online/journal.db -P W/kiosk-online/journal.db-wal \
      -P W/kiosk-online/cache.db -P W/kiosk-online/cache.db-wal \
      .venv/bin/python bench/tap_to_voice.py --cases online --workdir W
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import random
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from gpiozero.pins.mock import MockFactory

from core.bundle import Bundle
from device.acting.voice import make_player
from device.agent import Agent, TapResult
from device.config import DeviceConfig, load_bundle
from device.runtime import built_agent
from firmware_bridge.samsim import SimulatedSam
from firmware_bridge.simserve import SimulatedReaderPort
from provisioning.registry import add_device, write_bundle
from server.app import create_app
from server.config import ServerConfig
from server.verify.demodata import generate_people, load_demo_data, pick_demo_people
from siheyi.cli import local_fleet
from siheyi.demo import demo_card


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(pct(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
    }


async def blackhole() -> tuple[asyncio.Server, list[asyncio.StreamWriter]]:
    held: list[asyncio.StreamWriter] = []

    async def swallow(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    return await asyncio.start_server(swallow, "127.0.0.1", 0), held


async def run_case(
    name: str,
    *,
    workdir: Path,
    bundle: Bundle,
    server_url: str,
    people: list[str],
    taps: int,
    deadline: float,
    threshold: int,
    player: str,
    warm_url: str | None,
) -> tuple[list[float], int]:
    """Tap `taps` cards; returns (latencies in ms, taps without a prompt)."""
    sim = SimulatedReaderPort(SimulatedSam(), link=workdir / f"reader-{name}").start()
    config = DeviceConfig.from_dict(
        {
            "state_dir": str(workdir / f"kiosk-{name}"),
            "server_url": warm_url or server_url,
            "reader": {"url": sim.path, "poll_interval_s": 0.02},
            "verify": {"deadline_s": deadline, "circuit_threshold": threshold},
            "voice": {"player": player, "cache_dir": str(Path.home() / ".cache" / "siheyi")},
            "gpio": {"pin_factory": "mock"},
            "upload": {"interval_s": 1.0},
            "heartbeat": {"interval_s": 30.0},
        },
        source=name,
    )
    latencies: list[float] = []
    no_prompt = 0
    results: asyncio.Queue[TapResult] = asyncio.Queue()
    try:
        async with built_agent(config, bundle=bundle, pin_factory=MockFactory()) as agent:
            agent.add_listener(results.put_nowait)
            await _connected(agent)
            if warm_url is not None:
                # Learn everyone online first (the cache the offline cases decide from),
                # then point the kiosk at the faulty server.
                for person in people:
                    await _tap(sim, person, results)
                await agent._verifier.flush()
                agent._client._base = server_url
                if threshold == 1:
                    await _tap(sim, people[0], results)  # this failure opens the circuit
                    assert agent._verifier.breaker.state == "open"
            for i in range(taps):
                result = await _tap(sim, people[i % len(people)], results)
                if result is None or not result.spoken or result.latency_ms is None:
                    no_prompt += 1
                    continue
                latencies.append(result.latency_ms)
    finally:
        sim.stop()
    return latencies, no_prompt


async def _connected(agent: Agent) -> None:
    for _ in range(500):
        if agent._reader is not None and agent._reader.connected:
            return
        await asyncio.sleep(0.01)
    raise SystemExit("reader did not connect")


async def _tap(
    sim: SimulatedReaderPort, person: str, results: asyncio.Queue[TapResult]
) -> TapResult | None:
    sim.place(demo_card(person, random.Random(person)))
    try:
        return await asyncio.wait_for(results.get(), timeout=10)
    except TimeoutError:
        return None
    finally:
        sim.remove()
        await asyncio.sleep(0.05)


CASES = ("online", "blackholed", "circuit_open")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="siheyi-bench-")))
        else:
            work = Path(args.workdir)
            shutil.rmtree(work, ignore_errors=True)  # fresh journals: no backlog to upload
            work.mkdir(parents=True)
        return await _measure(work, args)
    raise AssertionError("unreachable")


async def _measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Server, one kiosk per case, the taps; returns the summary printed by `main`."""
    db = work / "server.db"
    now = dt.datetime.now(dt.UTC)
    await asyncio.to_thread(load_demo_data, db, 1000, 2022, now=now)
    picked = pick_demo_people(
        generate_people(1000, 2022, now), now, {"pass": 6, "check": 2, "nat_expired": 2}
    )
    people = [number for _o, number in picked]
    runner = web.AppRunner(create_app(ServerConfig.default(database=db)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    bundles = {}
    for case in args.cases:  # one kiosk per case
        path = work / f"bundle-{case}.json"
        write_bundle(
            add_device(local_fleet(None, db), f"SN-BENCH-{case}", "bench", server_url=url), path
        )
        bundles[case] = load_bundle(path)
    hole, held = await blackhole()
    hole_url = f"http://127.0.0.1:{hole.sockets[0].getsockname()[1]}"
    # case -> (server URL, taps, circuit threshold, URL to learn people from first)
    plans = {
        "online": (url, args.taps, 3, None),
        "blackholed": (hole_url, args.blackhole_taps, 100, url),
        "circuit_open": (hole_url, args.taps, 1, url),
    }
    measured: dict[str, tuple[list[float], int]] = {}
    try:
        for case in args.cases:
            server_url, taps, threshold, warm_url = plans[case]
            measured[case] = await run_case(
                case, bundle=bundles[case], workdir=work, server_url=server_url, taps=taps,
                threshold=threshold, player=args.player, warm_url=warm_url, people=people,
                deadline=args.deadline,
            )  # fmt: skip
    finally:
        for w in held:
            w.close()
        hole.close()
        with contextlib.suppress(Exception):
            await hole.wait_closed()
        await runner.cleanup()
    return {
        **{case: summary(lat) for case, (lat, _n) in measured.items()},
        "deadline_ms": round(args.deadline * 1000, 1),
        "no_prompt": sum(n for _lat, n in measured.values()),
        "taps": {case: plans[case][1] for case in args.cases},
        "player": args.player,
    }


def _cases(text: str) -> tuple[str, ...]:
    cases = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = sorted(set(cases) - set(CASES))
    if not cases or unknown:
        raise argparse.ArgumentTypeError(f"cases are a comma list of {', '.join(CASES)}")
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=60)
    parser.add_argument("--blackhole-taps", type=int, default=25)
    parser.add_argument("--deadline", type=float, default=1.2)
    parser.add_argument(
        "--player",
        default="aplay:null" if shutil.which("aplay") else "null",
        help="voice player spec (default: aplay to ALSA's null device)",
    )
    parser.add_argument("--cases", type=_cases, default=CASES, help="comma list; default all")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="emptied and used instead of a temp dir"
    )
    args = parser.parse_args()
    make_player(args.player).close()  # fail early on a bad spec
    result = asyncio.run(main_async(args))
    print(f"{'case':<14}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}   target")
    deadline_ms = result["deadline_ms"]
    targets: dict[str, tuple[str, Callable[[dict[str, float]], bool]]] = {
        "online": ("p99 <= 150", lambda s: s["p99_ms"] <= 150),
        "blackholed": (
            f"max <= {deadline_ms + 100:.0f}",
            lambda s: s["max_ms"] <= deadline_ms + 100,
        ),
        "circuit_open": ("p99 <= 50", lambda s: s["p99_ms"] <= 50),
    }
    ok = result["no_prompt"] == 0
    for case in args.cases:
        s = result[case]
        target, met = targets[case]
        ok = ok and met(s)
        print(f"{case:<14}{s['p50_ms']:>10}{s['p99_ms']:>10}{s['max_ms']:>10}   {target}")
    print(f"taps without a prompt: {result['no_prompt']}")
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
