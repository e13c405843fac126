"""One load-generator process of bench/fleet_load.py: an open-loop fleet of kiosks.

Reads a JSON spec on stdin, plays its share of the fleet for ``warmup + duration`` seconds
and prints one JSON object of measurements on stdout. Each kiosk sends, at fixed times from a
random phase (open loop: a request goes out at its time whether or not earlier ones were
answered), a verify every 3 s (unique tap id, a known person), a heartbeat every 30 s and,
every 2 s, an audit upload of its journal's pending decision events, hash-chained as a kiosk
writes them. Like the kiosk's uploader (device/recording/uploader.py), a kiosk with nothing
pending sends nothing (about one upload per verify, 2 of every 3 ticks); with
``idle_uploads`` it sends a ``system`` event instead, an upload on every tick.

Latency runs from the *scheduled* time to the last byte of the answer, so a generator that
falls behind shows up as latency, never as a gentler load (no coordinated omission). The
HTTP client is a minimal keep-alive HTTP/1.1 client on ``asyncio.Protocol`` with prebuilt
request bytes: an aiohttp client costs several times more CPU per request, and this process
must not be the bottleneck. It reports its own CPU time (``getrusage``) over the window.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import resource
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from core.audit import GENESIS_HASH, hash_event

VERIFY_S = 3.0
HEARTBEAT_S = 30.0
AUDIT_S = 2.0
KINDS = ("verify", "heartbeat", "audit")


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = self.buf[:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buf) < end + 4 + length:
            return
        self.buf = self.buf[end + 4 + length :]
        status = int(head[9:12])
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(-1)

    async def send(self, data: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


class Pool:
    """Up to ``size`` connections to one port; requests queue (their latency grows) beyond."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.size = size
        self.idle: list[_Conn] = []
        self.count = 0
        self.queue: deque[asyncio.Future[_Conn]] = deque()

    async def _get(self) -> _Conn:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
            self.count -= 1
        if self.count < self.size:
            self.count += 1
            try:
                _, conn = await asyncio.get_running_loop().create_connection(
                    lambda: _Conn(self), "127.0.0.1", self.port
                )
            except OSError:
                self.count -= 1
                raise
            return conn
        waiter: asyncio.Future[_Conn] = asyncio.get_running_loop().create_future()
        self.queue.append(waiter)
        return await waiter

    def _put(self, conn: _Conn) -> None:
        if conn.closed:
            self.count -= 1
            return
        while self.queue:
            waiter = self.queue.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    async def request(self, data: bytes) -> int:
        """The status of the answer to ``data``; -1 when the connection failed."""
        try:
            conn = await self._get()
        except OSError:
            return -1
        try:
            status = await conn.send(data)
        except Exception:
            conn.closed = True
            status = -1
        if status < 0 and conn.transport is not None:
            conn.transport.close()
            conn.closed = True
        self._put(conn)
        return status


def http_request(path: str, token: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Kiosk:
    """One simulated kiosk: its token, pool and journal (sequence, chain head, pending)."""

    device_id: str
    token: str
    pool: Pool
    boot_id: str
    seq: int = 0
    prev: str = GENESIS_HASH
    taps: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)

    def journal(self, kind: str, **extra: Any) -> None:
        self.seq += 1
        event: dict[str, Any] = {
            "seq": self.seq,
            "wall_time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "mono_ns": time.monotonic_ns(),
            "boot_id": self.boot_id,
            "clock_trusted": True,
            "kind": kind,
            "offline": False,
            "prev_hash": self.prev,
            "epoch": self.boot_id,
            **extra,
        }
        event["hash"] = self.prev = hash_event(event)
        self.pending.append(event)


class Player:
    """Fires each kiosk's requests at their times and records what came back."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.ids: list[str] = spec["ids"]
        self.rng = random.Random(spec["seed"])
        self.run_tag = spec["run_tag"]
        pools = [Pool(port, spec["connections"]) for port in spec["ports"]]
        self.kiosks = [
            Kiosk(device_id, token, pools[i % len(pools)], f"b-{self.run_tag}")
            for i, (device_id, token) in enumerate(spec["kiosks"])
        ]
        self.idle_uploads = bool(spec.get("idle_uploads", False))
        self.mix = frozenset(spec.get("mix", KINDS))
        self.warmup = float(spec["warmup"])
        self.duration = float(spec["duration"])
        self.latencies: dict[str, list[float]] = {k: [] for k in KINDS}
        self.errors: dict[str, int] = {}
        self.sent = dict.fromkeys(KINDS, 0)
        self.max_lag_ms = 0.0
        self.tasks: set[asyncio.Task[None]] = set()

    def _schedule(self, t0: float) -> list[tuple[float, int, int]]:
        """(time, kind index, kiosk index) for every request of the run, in time order."""
        end = t0 + self.warmup + self.duration
        events: list[tuple[float, int, int]] = []
        for k, period in enumerate((VERIFY_S, HEARTBEAT_S, AUDIT_S)):
            if KINDS[k] not in self.mix:
                continue
            for i in range(len(self.kiosks)):
                t = t0 + self.rng.uniform(0, period)
                while t < end:
                    events.append((t, k, i))
                    t += period
        heapq.heapify(events)
        return [heapq.heappop(events) for _ in range(len(events))]

    def _build(self, kind: str, kiosk: Kiosk) -> bytes | None:
        if kind == "verify":
            kiosk.taps += 1
            tap = f"{kiosk.device_id}-{self.run_tag}-{kiosk.taps}"
            number = self.ids[self.rng.randrange(len(self.ids))]
            body = b'{"tap_id":"%s","credential":{"kind":"id_card","id_number":"%s"}}' % (
                tap.encode(),
                number.encode(),
            )
            kiosk.journal(
                "decision",
                outcome="pass",
                prompt="绿码通行",
                masked_id=number[:4] + "*" * 10 + number[-4:],
                latency_ms=80.0,
                detail={"tap_id": tap},
            )
            return http_request("/v1/verify", kiosk.token, body)
        if kind == "heartbeat":
            beat = {"boot_id": kiosk.boot_id, "uptime_s": 3600.0, "sent_at": time.time()}
            return http_request("/v1/heartbeat", kiosk.token, json.dumps(beat).encode())
        if not kiosk.pending:
            if not self.idle_uploads:
                return None
            kiosk.journal("system", detail={"event": "idle"})
        batch, kiosk.pending = kiosk.pending, []
        body = json.dumps({"events": batch}, ensure_ascii=False).encode()
        return http_request("/v1/audit", kiosk.token, body)

    async def _fire(self, kind: str, kiosk: Kiosk, data: bytes, due: float, measured: bool) -> None:
        status = await kiosk.pool.request(data)
        elapsed_ms = (time.perf_counter() - due) * 1000
        if not measured:
            return
        if status == 200:
            self.latencies[kind].append(elapsed_ms)
        else:
            key = f"{kind}:{status}"
            self.errors[key] = self.errors.get(key, 0) + 1

    async def run(self) -> dict[str, Any]:
        t0 = time.perf_counter() + 0.5
        schedule = self._schedule(t0)
        start_measure = t0 + self.warmup
        usage0: resource.struct_rusage | None = None
        wall0 = 0.0
        for due, k, i in schedule:
            delay = due - time.perf_counter()
            if delay > 0.001:
                await asyncio.sleep(delay)
            measured = due >= start_measure
            if measured and usage0 is None:
                usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            lag_ms = (time.perf_counter() - due) * 1000
            if measured and lag_ms > self.max_lag_ms:
                self.max_lag_ms = lag_ms
            kind = KINDS[k]
            data = self._build(kind, self.kiosks[i])
            if data is None:
                continue
            if measured:
                self.sent[kind] += 1
            task = asyncio.ensure_future(self._fire(kind, self.kiosks[i], data, due, measured))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=30)
        usage1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        cpu = 0.0
        if usage0 is not None:
            cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        unanswered = sum(1 for t in self.tasks if not t.done())
        if unanswered:
            self.errors["unanswered"] = unanswered
        return {
            "latencies": {k: [round(v, 3) for v in vals] for k, vals in self.latencies.items()},
            "errors": self.errors,
            "sent": self.sent,
            "cpu_s": round(cpu, 3),
            "wall_s": round(wall1 - wall0, 3),
            "max_lag_ms": round(self.max_lag_ms, 2),
        }


def main() -> None:
    spec = json.loads(sys.stdin.read())
    result = asyncio.run(Player(spec).run())
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
