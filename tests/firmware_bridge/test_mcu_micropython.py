"""The firmware as a real MicroPython process, wired through ptys to the SAM sim and to us.

SAM side: ``SimulatedReaderPort`` on a pty (symlink ``sam``), paced at 115200 baud. Host side:
we keep a pty master and the firmware opens the slave through the symlink ``host``; closing
the master is an unplug, a new pty behind the same symlink a replug. These tests fail (never
skip) when the ``micropython`` binary is missing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import select
import subprocess
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge import bridge
from firmware_bridge.simserve import SimulatedReaderPort

from .test_micropython import ROOT, micropython_binary

pytestmark = pytest.mark.micropython


class HostEnd:
    """The Pi's end of the bridge: a pty master, a reader thread and a ``bridge.Decoder``."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.decoder = bridge.Decoder()
        self.peer = bridge.Peer()
        self.inbox: queue.Queue[bridge.Message] = queue.Queue()
        self.all: list[bridge.Message] = []
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self.plug()
        self._thread.start()

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        tmp = self.link.with_name(self.link.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.link)
        with self._lock:
            self._master, self._slave = master, slave

    def unplug(self) -> None:
        with self._lock:
            fds = (self._master, self._slave)
            self._master = self._slave = None
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in fds:
            if fd is not None:
                os.close(fd)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.unplug()

    def _pump(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                master = self._master
            if master is None:
                time.sleep(0.01)
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.02)
                data = os.read(master, 4096) if ready else b""
            except OSError:
                time.sleep(0.01)
                continue
            for item in self.decoder.feed(data):
                if isinstance(item, bridge.Message):
                    self.all.append(item)
                    self.inbox.put(item)

    def write(self, data: bytes) -> None:
        with self._lock:
            assert self._master is not None
            os.write(self._master, data)

    def send(self, msg_type: int, payload: bytes = b"", seq: int | None = None) -> int:
        if seq is None:
            seq = self.peer.next_seq()
        self.write(bridge.encode(msg_type, seq, payload))
        return seq

    def expect(
        self,
        msg_type: int,
        timeout: float = 2.0,
        where: Callable[[bridge.Message], bool] | None = None,
    ) -> bridge.Message:
        end = time.monotonic() + timeout
        seen: list[bridge.Message] = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                names = [(m.name, m.payload[:40]) for m in seen]
                raise AssertionError(f"no {bridge.TYPE_NAMES[msg_type]} in {timeout} s: {names}")
            try:
                msg = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(msg)
            if msg.type == msg_type and (where is None or where(msg)):
                return msg

    def drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.inbox.get_nowait()

    def logs(self) -> list[str]:
        return [bridge.parse_log(m.payload)[1] for m in self.all if m.type == bridge.LOG]

    def health(self) -> dict[str, Any]:
        self.drain()
        token = int(time.monotonic() * 1000) & 0xFFFFFFFF
        self.send(bridge.PING, bridge.ping_payload(token))
        self.expect(bridge.PONG, where=lambda m: bridge.parse_pong(m.payload)["token"] == token)
        health: dict[str, Any] = bridge.parse_health(self.expect(bridge.HEALTH).payload)
        return health


class Rig:
    def __init__(self, tmp: Path, max_open_ms: int) -> None:
        self.sim = SimulatedReaderPort(link=tmp / "sam")
        self.sim.baud = 115200  # real line timing: a read-base reply takes 112 ms
        self.sim.start()
        self.host = HostEnd(tmp / "host")
        self.stderr = open(tmp / "firmware.err", "w+b")  # noqa: SIM115
        argv = [micropython_binary(), "-m", "firmware_bridge.mcu"]
        argv += ["--sam", str(tmp / "sam"), "--host", str(tmp / "host")]
        argv += ["--max-open-ms", str(max_open_ms)]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.stderr)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def card(self, timeout: float = 2.0) -> tuple[bridge.Message, dict[str, Any]]:
        msg = self.host.expect(bridge.CARD, timeout)
        return msg, bridge.parse_card(msg.payload)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.host.close()
        self.sim.stop()
        self.stderr.close()


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(max_open_ms: int = 5000) -> Rig:
        rig = Rig(tmp_path, max_open_ms)
        rigs.append(rig)
        hello = rig.host.expect(bridge.HELLO, timeout=5)
        assert bridge.parse_hello(hello.payload) == (0, "siheyi-bridge 1.0.0")
        rig.host.peer.accept(hello)
        rig.host.expect(bridge.LOG, 3, lambda m: b"SAM ready" in m.payload)
        return rig

    yield make
    for rig in rigs:
        alive = rig.alive()
        errors = rig.errors()
        rig.close()
        assert alive, "firmware died: " + errors


@pytest.fixture
def rig(rig_factory: Callable[..., Rig]) -> Rig:
    return rig_factory()


def ack(rig: Rig, msg: bridge.Message) -> None:
    rig.host.send(bridge.ACK, bridge.ack_payload(msg.seq, bridge.STATUS_OK))


def test_card_once_per_presence(rig: Rig) -> None:
    number = rig.sim.sam.cards["resident"]["id_number"]
    t0 = time.monotonic()
    rig.sim.sam.place("resident")
    msg, card = rig.card()
    latency = time.monotonic() - t0
    ack(rig, msg)
    assert card["id_number"] == number and card["name"] == "张三"
    assert 100 <= card["cycle_ms"] < 1000  # find + select + 112 ms read at 115200
    assert latency < 1.0
    assert rig.host.peer.accept(msg) == "new"
    time.sleep(0.8)  # the card stays on the reader: no second event
    assert [m for m in rig.host.all if m.type == bridge.CARD] == [msg]
    rig.sim.sam.remove()
    time.sleep(0.2)
    rig.sim.sam.place("long_term")
    msg2, card2 = rig.card()
    ack(rig, msg2)
    assert card2["valid_to"] == "长期"
    assert msg2.seq != msg.seq and rig.host.peer.accept(msg2) == "new"


def test_card_retransmitted_until_acked(rig: Rig) -> None:
    rig.sim.sam.place("permit_j")
    first, card = rig.card()
    times = [time.monotonic()]
    copies = []
    for _ in range(3):
        copies.append(rig.host.expect(bridge.CARD, 1.0))
        times.append(time.monotonic())
    assert all(c == first for c in copies)  # same SEQ, same bytes
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.1 < g < 0.6 for g in gaps), gaps
    peer = bridge.Peer()
    verdicts = [peer.accept(m) for m in [first, *copies]]
    assert verdicts == ["new", "duplicate", "duplicate", "duplicate"]
    assert peer.duplicates == 3 and peer.lost == 0
    assert card["card_type"] == "J"
    # After the third resend the firmware gives up and says so.
    rig.host.expect(bridge.LOG, 1.0, lambda m: b"not acknowledged" in m.payload)
    assert sum(m.type == bridge.CARD for m in rig.host.all) == 4


def test_ack_stops_retransmission(rig: Rig) -> None:
    rig.sim.sam.place("foreigner_i")
    msg, card = rig.card()
    ack(rig, msg)
    time.sleep(0.7)
    assert sum(m.type == bridge.CARD for m in rig.host.all) == 1
    assert card["id_number"] == "USA110085070151"


def test_relay_pulse_clamp_and_release(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(max_open_ms=1500)
    host = rig.host
    seq = host.send(bridge.RELAY, bridge.relay_payload(200))
    t0 = time.monotonic()
    reply = host.expect(bridge.ACK, where=lambda m: bridge.parse_ack(m.payload)[0] == seq)
    assert bridge.parse_ack(reply.payload) == (seq, 0, bridge.relay_payload(200))
    # The same RELAY again (a retransmission, the ACK was "lost"): ACKed, not acted on twice.
    host.send(bridge.RELAY, bridge.relay_payload(200), seq=seq)
    again = host.expect(bridge.ACK, where=lambda m: bridge.parse_ack(m.payload)[0] == seq)
    assert bridge.parse_ack(again.payload)[2] == bridge.relay_payload(200)
    host.expect(bridge.LOG, 1, lambda m: b"relay off" in m.payload)
    pulse = time.monotonic() - t0
    assert 0.15 < pulse < 0.5, pulse
    relay_logs = [line for line in host.logs() if line.startswith("relay")]
    assert relay_logs == ["relay on 200 ms", "relay off (time up)"]
    assert host.health()["relay_open"] is False
    # 60 s asked, 1.5 s granted, released by the MCU with no further word from the Pi.
    seq = host.send(bridge.RELAY, bridge.relay_payload(60000))
    t0 = time.monotonic()
    reply = host.expect(bridge.ACK, where=lambda m: bridge.parse_ack(m.payload)[0] == seq)
    assert bridge.parse_ack(reply.payload)[2] == bridge.relay_payload(1500)
    host.expect(bridge.LOG, 1, lambda m: b"relay on 1500 ms" in m.payload)
    time.sleep(0.5)
    assert host.health()["relay_open"] is True
    host.expect(bridge.LOG, 2, lambda m: b"relay off (time up)" in m.payload)
    assert 1.3 < time.monotonic() - t0 < 2.0
    assert host.logs().count("relay off (time up)") == 2
    seq = host.send(bridge.RELAY, b"\x01")  # malformed
    bad = host.expect(bridge.ACK, where=lambda m: bridge.parse_ack(m.payload)[0] == seq)
    assert bridge.parse_ack(bad.payload)[1] == bridge.STATUS_BAD_REQUEST


def test_ping_pong_and_health(rig: Rig) -> None:
    host = rig.host
    host.send(bridge.PING, bridge.ping_payload(0xDEADBEEF))
    pong = bridge.parse_pong(host.expect(bridge.PONG).payload)
    health = bridge.parse_health(host.expect(bridge.HEALTH).payload)
    assert pong["token"] == 0xDEADBEEF and pong["version"] == "siheyi-bridge 1.0.0"
    time.sleep(0.3)
    host.send(bridge.PING, bridge.ping_payload(2))
    pong2 = bridge.parse_pong(host.expect(bridge.PONG).payload)
    assert 250 <= pong2["uptime_ms"] - pong["uptime_ms"] < 1500
    assert health["reader"]["connected"] is True
    assert health["reader"]["last_read_ms_ago"] is None
    # Periodic HEALTH without asking, every 2 s.
    host.drain()
    host.expect(bridge.HEALTH, 2.5)
    rig.sim.sam.place("resident")
    ack(rig, rig.card()[0])
    reader = host.health()["reader"]
    assert reader["reads"] == 1 and 0 <= reader["last_read_ms_ago"] < 1000


def test_sam_unplug_replug_recovers(rig: Rig) -> None:
    rig.sim.unplug()
    rig.host.expect(bridge.LOG, 2, lambda m: b"SAM port lost" in m.payload)
    health = rig.host.health()
    assert health["reader"]["connected"] is False
    assert health["reader"]["errors"]["port_lost"] >= 1
    time.sleep(0.5)
    rig.sim.sam.place("resident")
    t0 = time.monotonic()
    rig.sim.replug()
    msg, card = rig.card(timeout=2.0)
    ack(rig, msg)
    assert time.monotonic() - t0 < 2.0
    assert card["name"] == "张三"
    assert rig.host.health()["reader"]["connected"] is True


def test_sam_silent_then_back(rig: Rig) -> None:
    rig.sim.silent = True
    rig.host.expect(bridge.LOG, 2, lambda m: b"SAM not answering" in m.payload)
    reader = rig.host.health()["reader"]
    assert reader["connected"] is False and reader["errors"]["timeout"] >= 3
    rig.sim.silent = False
    rig.sim.sam.place("resident")
    ack(rig, rig.card(timeout=2.0)[0])


def test_host_link_reopen_recovers(rig: Rig) -> None:
    host = rig.host
    host.unplug()
    time.sleep(0.4)
    t0 = time.monotonic()
    host.plug()
    hello = host.expect(bridge.HELLO, 2.0)
    assert time.monotonic() - t0 < 2.0
    assert bridge.parse_hello(hello.payload)[0] == bridge.CAUSE_LINK
    health = host.health()
    assert health["bridge"]["host_reopens"] == 2
    rig.sim.sam.place("resident")
    ack(rig, rig.card()[0])


def test_bad_input_on_host_link_is_counted(rig: Rig) -> None:
    host = rig.host
    before = host.health()["bridge"]
    good = bridge.encode(bridge.PING, 500, bridge.ping_payload(7))
    corrupt = bytearray(bridge.encode(bridge.PING, 501, bridge.ping_payload(8)))
    corrupt[3] ^= 0x55
    bad_version = bridge.encode(bridge.PING, 502, b"")
    host.write(b"\x01\x02garbage\xff\x00")  # broken COBS
    host.write(bytes(corrupt))  # CRC error
    host.write(good[:5] + b"\x00")  # truncated
    host.write(b"\x7e" * 3000 + b"\x00")  # oversized
    host.write(good[:4] + bridge.encode(bridge.PING, 503, bridge.ping_payload(9)))  # interleaved
    host.write(b"\x02\x01\x00")  # short
    host.write(bytes([bad_version[0], 2]) + bad_version[2:])  # VER 2 (CRC still over VER 1)
    host.write(os.urandom(4000).replace(b"\x00", b"\x11") + b"\x00")
    host.write(good)
    pong = bridge.parse_pong(host.expect(bridge.PONG).payload)
    assert pong["token"] == 7
    after = host.health()["bridge"]
    assert after["bad_frames"] - before["bad_frames"] >= 5
    assert after["oversized"] - before["oversized"] >= 2
    assert rig.alive()
    seq = host.send(bridge.RELAY, bridge.relay_payload(100))
    host.expect(bridge.ACK, where=lambda m: bridge.parse_ack(m.payload)[0] == seq)
