"""`kiosk demo`: the embedded default, a whole gate on one machine.

Starts the server on SQLite with generated people, provisions one kiosk, serves a simulated
SAM reader on a pty and runs the real agent against it, then taps demo cards through the
reader and prints one line per decision. Nothing here is a shortcut around the real path: the
card crosses the serial protocol, the decision crosses HTTP, the audit crosses the uploader.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import random
import secrets
import signal
import sys
import tempfile
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from core.bundle import Bundle
from device.agent import Agent, TapResult
from device.config import DeviceConfig, load_bundle
from device.errors import ServerError
from device.link.client import ServerClient
from device.link.identity import DeviceIdentity
from device.runtime import built_agent
from firmware_bridge import idcard
from firmware_bridge.samsim import SimulatedSam
from firmware_bridge.simserve import SimulatedReaderPort

log = logging.getLogger(__name__)

DEMO_SITE = "demo-site"
DEMO_SERIAL = "DEMO-0001"
DEMO_GUARD = "demo-guard"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "涛"]
AREAS = {
    "110101": "北京市东城区东华门街道",
    "310104": "上海市徐汇区漕河泾街道",
    "440305": "广东省深圳市南山区粤海街道",
    "330106": "浙江省杭州市西湖区文新街道",
    "510107": "四川省成都市武侯区玉林街道",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--taps",
        type=int,
        default=0,
        metavar="N",
        help="tap N cards, then print the summary and exit (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per tap on stdout, then one {"summary": …} object',
    )
    parser.add_argument(
        "--server-url",
        metavar="URL",
        help="tap against this server instead of an embedded one (needs --bundle)",
    )
    parser.add_argument(
        "--bundle",
        metavar="FILE",
        help="the kiosk's bundle for --server-url (from `kiosk provision add`)",
    )
    parser.add_argument(
        "--reuse-kiosk",
        action="store_true",
        help="with --server-url: run even if the bundle's kiosk already has audit history on"
        " the server (the demo's taps then become part of that kiosk's audit trail)",
    )
    parser.add_argument(
        "--people",
        type=int,
        default=1000,
        metavar="N",
        help="synthetic people the server knows (default 1000; with --server-url: as many as"
        " `kiosk server init-demo-data` loaded there)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=2022,
        metavar="S",
        help="seed of the people and of the taps: the same seed, the same run (default 2022)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="embedded server address (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        metavar="P",
        help="embedded server port (default 8080, any free one if taken; 0 = any)",
    )
    parser.add_argument(
        "--workdir", metavar="DIR", help="keep state here (default: a temporary directory)"
    )
    parser.add_argument(
        "--player",
        default="auto",
        help="audio player: auto (aplay when a sound card exists, else file:WORKDIR/played),"
        " aplay, null, or file:DIR (a copy of each prompt, named after its outcome:"
        " DIR/000001-pass.wav, 000002-check.wav, …)",
    )
    parser.add_argument(
        "--interval", type=float, default=1.5, metavar="S", help="seconds between taps (1.5)"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=1.2,
        metavar="S",
        help="seconds the kiosk waits for the server before deciding offline (1.2)",
    )


def main(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):
        # The table is the demo's output; the server's and the kiosk's INFO lines (each tap
        # logged again, alerts of a kiosk just booted) would interleave with its rows.
        # Warnings and errors still show; `kiosk -v demo` shows everything.
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0


def demo_card(id_number: str, rng: random.Random, valid_to: str = "") -> dict[str, Any]:
    """A plausible resident card for a demo person (the number decides sex and birth)."""
    birth = id_number[6:14]
    sex = "1" if int(id_number[16]) % 2 else "2"
    issued = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(0, 1500))
    return {
        "card_type": "resident",
        "name": rng.choice(SURNAMES) + rng.choice(GIVEN),
        "sex": sex,
        "nation": "01",
        "birth": f"{birth[:4]}-{birth[4:6]}-{birth[6:]}",
        "address": AREAS.get(id_number[:6], "北京市东城区东华门街道")
        + f"{rng.randrange(1, 300)}号",
        "id_number": id_number,
        "authority": "公安局",
        "valid_from": issued.isoformat(),
        "valid_to": valid_to or issued.replace(year=issued.year + 20).isoformat(),
    }


def demo_cards(id_numbers: list[str], seed: int) -> list[dict[str, Any]]:
    """Cards for the given people plus three that show the other outcomes."""
    rng = random.Random(seed)
    cards = [demo_card(n, rng) for n in id_numbers]
    unknown = idcard.make_id_number("510107", "19880808", "123")
    cards.append(demo_card(unknown, rng))  # nobody the server knows
    bad = cards[0]["id_number"][:17] + ("0" if cards[0]["id_number"][17] != "0" else "1")
    cards.append(demo_card(bad, rng))  # wrong check character
    cards.append(demo_card(cards[1]["id_number"], rng, valid_to="2019-12-31"))  # expired card
    return cards


@contextlib.asynccontextmanager
async def embedded_server(
    workdir: Path, people: int, seed: int, host: str, port: int
) -> AsyncIterator[tuple[str, Path, list[str]]]:
    """Run the real server app on SQLite with demo data; yields (url, db path, demo IDs)."""
    from server.app import create_app
    from server.config import ServerConfig
    from server.verify.demodata import load_demo_data

    db_path = workdir / "siheyi.db"
    now = dt.datetime.now(dt.UTC)
    await asyncio.to_thread(functools.partial(load_demo_data, db_path, people, seed, now=now))
    ids = demo_ids(people, seed, now)
    app = create_app(ServerConfig.default(database=db_path))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError:
        site = web.TCPSite(runner, host, 0)  # the default port is taken: any free one
        await site.start()
    actual_port = runner.addresses[0][1] if runner.addresses else port
    try:
        yield f"http://{host}:{actual_port}", db_path, ids
    finally:
        await runner.cleanup()


def demo_ids(people: int, seed: int, now: dt.datetime) -> list[str]:
    """A mix of people the server will pass, check and find NAT-expired."""
    from server.verify.demodata import generate_people, pick_demo_people

    rows = generate_people(people, seed, now)
    counts = {"pass": 6, "check": 3, "nat_expired": 3}
    return [number for _outcome, number in pick_demo_people(rows, now, counts)]


def choose_player(spec: str, workdir: Path) -> str:
    if spec != "auto":
        return spec
    try:
        has_card = Path("/proc/asound/cards").read_text().strip() not in (
            "",
            "--- no soundcards ---",
        )
    except OSError:
        has_card = False
    return "aplay" if has_card else f"file:{workdir / 'played'}"


#: The text columns: (heading, width); the prompt's width counts a CJK character as two.
COLUMNS = (
    ("tap", 6),
    ("id (masked)", 18),
    ("outcome", 18),
    ("prompt", 20),
    ("where", 7),
    ("latency", 10),
    ("reasons", 0),
)


def _pad(text: str, width: int, right: bool = False) -> str:
    """``text`` padded to ``width`` terminal cells: a Chinese prompt is twice as wide as its
    length, and str.ljust would leave every column after it out of line."""
    cells = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    fill = " " * max(0, width - cells)
    return fill + text if right else text + fill


def _row(cells: list[str]) -> str:
    """One line of the table: the columns of :data:`COLUMNS`, latency right-aligned."""
    parts = [
        _pad(cell, width, right=heading in ("tap", "latency")) if width else cell
        for cell, (heading, width) in zip(cells, COLUMNS, strict=True)
    ]
    return "  ".join(parts)


def heading_line() -> str:
    """The column headings printed above the first tap (text output only)."""
    return _row([heading for heading, _width in COLUMNS])


def format_line(n: int, result: TapResult, as_json: bool) -> str:
    d = result.decision
    latency = round(result.latency_ms, 1) if result.latency_ms is not None else None
    if as_json:
        return json.dumps(
            {
                "tap": n,
                "outcome": d.outcome,
                "prompt": d.prompt,
                "offline": d.offline,
                "latency_ms": latency,
                "masked_id": d.masked_id,
                "reasons": list(d.reasons),
                "spoken": result.spoken,
                "seq": result.seq,
            },
            ensure_ascii=False,
        )
    where = "offline" if d.offline else "online"
    ms = f"{latency:.1f} ms" if latency is not None else "silent"
    reasons = ",".join(d.reasons) or "-"
    return _row([f"[{n:4d}]", d.masked_id, d.outcome, d.prompt, where, ms, reasons])


@dataclasses.dataclass
class Tally:
    """What the taps came to, for the summary line that ends every run."""

    taps: int = 0
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)
    latencies: list[float] = dataclasses.field(default_factory=list)

    def add(self, outcome: str, latency_ms: float | None) -> None:
        self.taps += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if latency_ms is not None:
            self.latencies.append(latency_ms)

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile of the latencies (None when nothing was played)."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)

    def summary(self, interrupted: bool, as_json: bool) -> str:
        """The last line: counts per outcome and p50/p99 latency, text or one JSON object."""
        p50, p99 = self.percentile(0.50), self.percentile(0.99)
        ended = "Ctrl-C" if interrupted else "--taps"
        if as_json:
            body = {
                "taps": self.taps,
                "outcomes": self.outcomes,
                "latency_ms": {"p50": p50, "p99": p99},
                "ended_by": ended,
            }
            return json.dumps({"summary": body}, ensure_ascii=False)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())) or "none"
        latency = f"p50 {p50} ms, p99 {p99} ms" if p50 is not None else "none played"
        return f"summary: {self.taps} taps ({ended}): {counts}; latency {latency}"


async def _run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = Path(args.workdir)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="siheyi-demo-")))
        async with contextlib.AsyncExitStack() as astack:
            return await _demo(args, workdir, astack)
    return 0  # pragma: no cover


async def _demo(args: argparse.Namespace, workdir: Path, astack: contextlib.AsyncExitStack) -> int:
    info = sys.stderr if args.json else sys.stdout  # keep --json output pure JSON lines
    if args.server_url and not args.bundle:
        print("error: --server-url needs --bundle (see `kiosk provision add`)", file=sys.stderr)
        return 2
    server_url, bundle, ids = await _server_and_bundle(args, workdir, astack, info)
    if args.server_url and not args.reuse_kiosk:
        refusal = await kiosk_with_history(server_url, bundle, Path(args.bundle))
        if refusal:
            print(f"error: {refusal}", file=sys.stderr)
            return 2
    sim = SimulatedReaderPort(SimulatedSam(), link=workdir / "reader")
    sim.start()
    astack.callback(sim.stop)
    player = choose_player(args.player, workdir)
    config = _kiosk_config(args, workdir, server_url, sim.path, player)
    print(f"reader:    simulated SAM on {sim.path}", file=info)
    print(f"kiosk:     {bundle.device_id} at {bundle.site}, player {player}", file=info)
    print("rendering prompts (once, cached) ...", file=info, flush=True)
    agent = await astack.enter_async_context(built_agent(config, bundle=bundle))
    results: asyncio.Queue[TapResult] = asyncio.Queue()
    agent.add_listener(results.put_nowait)
    what = f"{args.taps} cards" if args.taps else "cards until Ctrl-C"
    print(f"ready: tapping {what}", file=info)
    tally = await _tap_cards(args, sim, demo_cards(ids, args.seed), results, info)
    await _settle_uploads(agent)
    return 1 if tally.outcomes.get("no_decision") else 0


async def _server_and_bundle(
    args: argparse.Namespace, workdir: Path, astack: contextlib.AsyncExitStack, info: TextIO
) -> tuple[str, Bundle, list[str]]:
    """A given server and bundle, or the embedded server with a freshly provisioned kiosk."""
    if args.server_url:
        ids = demo_ids(args.people, args.seed, dt.datetime.now(dt.UTC))
        return args.server_url, load_bundle(Path(args.bundle)), ids
    from provisioning.registry import add_device, write_bundle
    from siheyi.cli import local_fleet

    server_url, db_path, ids = await astack.enter_async_context(
        embedded_server(workdir, args.people, args.seed, args.host, args.port)
    )
    bundle_path = workdir / "bundle.json"
    issued = await asyncio.to_thread(
        functools.partial(
            add_device,
            local_fleet(None, db_path),
            DEMO_SERIAL,
            DEMO_SITE,
            server_url=server_url,
            rotate_secret=True,
        )
    )
    write_bundle(issued, bundle_path)
    print(f"server:    {server_url}  (SQLite {db_path}, {args.people} people)", file=info)
    password = await asyncio.to_thread(add_demo_guard, db_path)
    print(f"board:     {server_url}/board/", file=info)
    print(f"login:     {DEMO_GUARD} / {password}  (a guard of {DEMO_SITE})", file=info)
    return server_url, load_bundle(bundle_path), ids


def add_demo_guard(db_path: Path) -> str:
    """A guard account for the demo site with a fresh password (printed, never stored clear)."""
    from server.accounts import users
    from server.accounts.passwords import hash_password
    from server.fleet.sessions import now_iso, utc_now
    from server.storage.db import connect, transaction

    password = secrets.token_urlsafe(9)
    with connect(db_path) as conn, transaction(conn):
        users.save_user(
            conn, DEMO_GUARD, "guard", [DEMO_SITE], hash_password(password), now_iso(utc_now())
        )
    return password


async def kiosk_with_history(server_url: str, bundle: Bundle, bundle_path: Path) -> str:
    """Why the demo must not tap as this kiosk ("" when it may).

    A real kiosk's bundle would put demo taps into a real audit trail (issue 10, part 3):
    only a kiosk the server holds no audit for is taken without ``--reuse-kiosk``. The
    heartbeat's answer says what the server holds; a server too old to say is not trusted.
    """
    identity = DeviceIdentity.from_bundle(bundle.device_id, bundle.private_key, bundle_path)
    try:
        async with ServerClient(server_url, identity, tls_ca=bundle.tls_ca) as client:
            answer = await client.heartbeat({"boot_id": "kiosk-demo"}, timeout_s=10.0)
    except ServerError as exc:
        return f"cannot ask {server_url} about kiosk {bundle.device_id}: {exc}"
    history = answer.get("audit")
    if not isinstance(history, dict):
        return (
            "the server does not say whether this kiosk has audit history;"
            " pass --reuse-kiosk to run anyway"
        )
    if history.get("epochs", 0) or history.get("events", 0):
        return (
            f"kiosk {bundle.device_id} already has audit history on the server"
            f" ({history.get('events', 0)} events): provision a kiosk for the demo, or pass"
            " --reuse-kiosk to add demo taps to its audit trail"
        )
    return ""


def _kiosk_config(
    args: argparse.Namespace, workdir: Path, server_url: str, reader_url: str, player: str
) -> DeviceConfig:
    return DeviceConfig.from_dict(
        {
            "bundle": str(workdir / "bundle.json"),
            "state_dir": str(workdir / "kiosk"),
            "server_url": server_url,
            "reader": {"url": reader_url, "poll_interval_s": 0.05},
            "verify": {"deadline_s": args.deadline},
            "voice": {"player": player, "cache_dir": str(Path.home() / ".cache" / "siheyi")},
            "gpio": {"pin_factory": "mock"},
            "upload": {"interval_s": 1.0},
            "heartbeat": {"interval_s": 10.0},
        },
        source="demo",
    )


async def _tap_cards(
    args: argparse.Namespace,
    sim: SimulatedReaderPort,
    cards: list[dict[str, Any]],
    results: asyncio.Queue[TapResult],
    info: TextIO,
) -> Tally:
    """Tap random cards (``--taps`` of them, or until Ctrl-C); one line per tap, then a
    summary line. Ctrl-C stops the taps rather than the program, so the summary is printed
    and the kiosk's uploads settle; a second Ctrl-C interrupts as usual."""
    out = sys.stdout
    rng = random.Random(args.seed)
    tally = Tally()
    stop = asyncio.Event()
    with _stopped_by_sigint(stop):
        if not args.json:
            print(heading_line(), file=out, flush=True)
        while not stop.is_set() and (not args.taps or tally.taps < args.taps):
            n = tally.taps + 1
            card = cards[rng.randrange(len(cards))]
            result = await _tap(sim, card, results)
            if result is None:
                print(f"[{n:4d}] no decision within 5 s (reader problem?)", file=info, flush=True)
                tally.add("no_decision", None)
                continue
            tally.add(result.decision.outcome, result.latency_ms)
            print(format_line(n, result, args.json), file=out, flush=True)
            pause = args.interval if not args.taps else min(args.interval, 0.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
    print(tally.summary(stop.is_set(), args.json), file=out, flush=True)
    return tally


@contextlib.contextmanager
def _stopped_by_sigint(stop: asyncio.Event) -> Iterator[None]:
    """The first Ctrl-C sets ``stop``; the next one raises KeyboardInterrupt again."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)

    try:
        loop.add_signal_handler(signal.SIGINT, first)
    except (NotImplementedError, RuntimeError):  # no signals here: Ctrl-C ends the demo
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _tap(
    sim: SimulatedReaderPort, card: dict[str, Any], results: asyncio.Queue[TapResult]
) -> TapResult | None:
    """Place a card, wait for its decision, take the card away again."""
    sim.place(card)
    try:
        return await asyncio.wait_for(results.get(), timeout=5.0)
    except TimeoutError:
        return None
    finally:
        sim.remove()
        # Let the reader see the empty field before the next card arrives.
        await asyncio.sleep(0.15)


async def _settle_uploads(agent: Agent, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = await agent.status()
        if not status["journal_pending"]:
            return
        await asyncio.sleep(0.1)
