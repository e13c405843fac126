"""Firmware logic on CPython with in-memory ports, a fake clock and SimPins (deterministic)."""

from __future__ import annotations

import itertools

from firmware_bridge import bridge
from firmware_bridge.mcu import hw
from firmware_bridge.mcu.main import Firmware, parse_args
from firmware_bridge.samsim import SimulatedSam


class FakeClock(hw.Clock):
    def __init__(self) -> None:
        self.now = 1000

    def ticks_ms(self) -> int:
        return self.now

    def diff(self, a: int, b: int) -> int:
        return a - b

    def add(self, a: int, ms: int) -> int:
        return a + ms

    def sleep_ms(self, ms: int) -> None:
        self.now += ms


class SamPort:
    """A port whose far end is a SimulatedSam answering instantly."""

    def __init__(self, sim: SimulatedSam) -> None:
        self.sim = sim
        self.rx = bytearray()
        self.gone = False

    def _check(self) -> None:
        if self.gone:
            raise OSError(5, "gone")

    def write(self, data: bytes) -> int:
        self._check()
        self.rx += self.sim.feed(data)
        return len(data)

    def read(self, n: int) -> bytes:
        self._check()
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def any(self) -> int:
        self._check()
        return len(self.rx)

    def wait(self, timeout_ms: int) -> bool:
        return bool(self.any())

    def close(self) -> None:
        pass


class HostPort(SamPort):
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.rx = bytearray()
        self.sent = bytearray()
        self.gone = False

    def write(self, data: bytes) -> int:
        self._check()
        self.sent += data
        return len(data)

    def wait(self, timeout_ms: int) -> bool:
        if not self.rx:
            self.clock.now += timeout_ms
        return bool(self.rx)


def make(
    max_open_ms: int = 5000,
) -> tuple[Firmware, FakeClock, SimulatedSam, HostPort, hw.SimPin, hw.SimWatchdog]:
    clock = FakeClock()
    sim = SimulatedSam()
    host = HostPort(clock)
    relay = hw.SimPin("relay", 1)
    dog = hw.SimWatchdog(5000, clock)
    fw = Firmware(
        lambda: SamPort(sim),
        lambda: host,
        relay,
        clock=clock,
        watchdog=dog,
        max_open_ms=max_open_ms,
    )
    fw.start()
    return fw, clock, sim, host, relay, dog


def messages(host: HostPort) -> list[bridge.Message]:
    dec = bridge.Decoder()
    items = dec.feed(bytes(host.sent))
    host.sent.clear()
    assert dec.bad_frames == 0
    return [i for i in items if isinstance(i, bridge.Message)]


def run_for(fw: Firmware, clock: FakeClock, ms: int) -> None:
    end = clock.now + ms
    while clock.now < end:
        fw.step()
        clock.now += 1


def test_safe_state_first_and_hello() -> None:
    _fw, _clock, _sim, host, relay, dog = make()
    assert relay.history[:2] == [1, 0]  # released in the constructor, before any I/O
    msgs = messages(host)
    assert msgs[0].type == bridge.HELLO and msgs[0].seq == 0
    assert dog.feeds >= 1


def test_relay_clamped_and_released_when_pi_goes_silent() -> None:
    fw, clock, _sim, host, relay, dog = make(max_open_ms=3000)
    run_for(fw, clock, 50)
    messages(host)
    host.rx += bridge.encode(bridge.RELAY, 1, bridge.relay_payload(60000))
    t0 = clock.now
    fw.step()
    acks = [m for m in messages(host) if m.type == bridge.ACK]
    assert bridge.parse_ack(acks[0].payload) == (1, 0, bridge.relay_payload(3000))
    assert relay.value() == 1
    host.gone = True  # the Pi dies mid-pulse
    while relay.value():
        started = clock.now  # the step reads the clock first
        fw.step()
        clock.now += 1
        assert started - t0 <= 3001  # +1: the fake host's wait may land on the due tick
    assert started - t0 >= 3000
    assert dog.longest_gap_ms <= 25 and not dog.expired


def test_card_resent_every_200_ms_then_dropped() -> None:
    fw, clock, sim, host, _relay, _dog = make()
    run_for(fw, clock, 150)
    messages(host)
    sim.place("resident")
    cards = []
    times = []
    for _ in range(1500):
        fw.step()
        clock.now += 1
        for m in messages(host):
            if m.type == bridge.CARD:
                cards.append(m)
                times.append(clock.now)
    assert len(cards) == 4 and len({(c.seq, c.payload) for c in cards}) == 1
    assert [b - a for a, b in itertools.pairwise(times)] == [201, 201, 201]
    assert bridge.parse_card(cards[0].payload)["id_number"] == sim.cards["resident"]["id_number"]
    assert fw.stats["cards_dropped"] == 1 and fw.stats["card_resends"] == 3


def test_ack_ends_retransmission() -> None:
    fw, clock, sim, host, _relay, _dog = make()
    run_for(fw, clock, 150)
    sim.place("long_term")
    card = None
    while card is None:
        fw.step()
        clock.now += 1
        card = next((m for m in messages(host) if m.type == bridge.CARD), None)
    host.rx += bridge.encode(bridge.ACK, 0, bridge.ack_payload(card.seq))
    run_for(fw, clock, 1000)
    assert not [m for m in messages(host) if m.type == bridge.CARD]
    assert fw.stats["cards_acked"] == 1


def test_parse_args() -> None:
    assert parse_args(["--sam", "a", "--host=b", "--max-open-ms", "1500"])["max_open_ms"] == 1500
    for bad in (
        [],
        ["--sam", "a"],
        ["--sam", "a", "--host", "b", "--x", "1"],
        ["--sam", "a", "--host", "b", "--max-open-ms", "70000"],
    ):
        try:
            parse_args(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
