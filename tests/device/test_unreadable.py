"""No silent tap (issue 10, part 5): a card that was found but whose read reply is truncated,
replaced by line noise or late gets exactly one unreadable-card credential and one
`card_unreadable` event, and a card placed again afterwards reads normally.

The SAM is the simulated module on a real pty. The simulator's control commands act on the
next reply whatever it is (usually a find); these faults must hit the read reply itself, so
a small subclass mangles exactly that one.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.sources.cardreader import CardReader
from device.sources.credentials import Credential
from firmware_bridge import sam
from firmware_bridge.samsim import SimulatedSam
from firmware_bridge.simserve import SimulatedReaderPort
from tests.device.test_cardreader import CARD

READ_TIMEOUT_S = 0.4


class ManglingSam(SimulatedSam):  # type: ignore[misc]
    """Mangles the next read-base reply: ``truncate``, ``noise`` or ``late``."""

    def __init__(self) -> None:
        super().__init__()
        self.mangle_next_read = ""
        self.late_s = READ_TIMEOUT_S + 0.3

    def _read(self, c: Any, finger: bool) -> bytes | None:
        reply: bytes | None = super()._read(c, finger)
        how, self.mangle_next_read = self.mangle_next_read, ""
        if reply is None or not how:
            return reply
        if how == "truncate":
            return reply[: len(reply) // 2]
        if how == "noise":  # no 0xAA byte, so no preamble can appear
            return bytes((i * 37 + 11) % 0xA0 for i in range(len(reply)))
        time.sleep(self.late_s)  # "late": the whole reply, after the host gave up
        return reply


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatedReaderPort]:
    port = SimulatedReaderPort(ManglingSam(), link=tmp_path / "reader").start()
    yield port
    port.stop()


class Recorder:
    """The two callbacks of a source, kept for the test."""

    def __init__(self) -> None:
        self.credentials: queue.Queue[Credential] = queue.Queue()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def event(self, what: str, detail: dict[str, Any]) -> None:
        with self._lock:
            self.events.append((what, detail))

    def named(self, what: str) -> list[dict[str, Any]]:
        with self._lock:
            return [d for w, d in self.events if w == what]


@pytest.fixture
def reader(sim: SimulatedReaderPort) -> Iterator[tuple[CardReader, Recorder]]:
    rec = Recorder()
    r = CardReader(
        sim.path, poll_interval_s=0.02, reconnect_interval_s=0.1, read_timeout_s=READ_TIMEOUT_S
    )
    r.start(rec.credentials.put, rec.event)
    deadline = time.monotonic() + 3
    while not r.health()["connected"]:
        assert time.monotonic() < deadline, r.health()
        time.sleep(0.02)
    yield r, rec
    r.stop()


@pytest.mark.parametrize("how", ["truncate", "noise", "late"])
def test_bad_read_reply_is_one_unreadable_tap(
    sim: SimulatedReaderPort, reader: tuple[CardReader, Recorder], how: str
) -> None:
    r, rec = reader
    assert isinstance(sim.sam, ManglingSam)
    sim.sam.mangle_next_read = how
    placed = time.monotonic()
    sim.place(CARD)
    cred = rec.credentials.get(timeout=READ_TIMEOUT_S + 2)
    assert not cred.readable and cred.id_number == "" and cred.kind == "id_card"
    # Within the read timeout (plus the find and select before it), not after a removal.
    assert cred.completed_at - placed < READ_TIMEOUT_S + 0.5
    (event,) = rec.named("card_unreadable")
    assert "read" in event["error"]
    # The card stays on the reader: no second prompt for the same presentation.
    time.sleep(READ_TIMEOUT_S + 0.4)
    assert rec.credentials.empty() and len(rec.named("card_unreadable")) == 1
    assert r.health()["errors"]["unreadable"] == 1
    # Tapped again, it reads.
    sim.remove()
    time.sleep(0.15)
    sim.place(CARD)
    again = rec.credentials.get(timeout=3)
    assert again.readable and again.id_number == CARD["id_number"]


def test_every_read_refused_is_one_unreadable_tap(
    sim: SimulatedReaderPort, reader: tuple[CardReader, Recorder]
) -> None:
    """A card the SAM refuses to read (SW3 41 on the retries too) while it stays in place."""
    _r, rec = reader

    def refuse(c: Any, finger: bool) -> bytes | None:
        reply: bytes | None = sim.sam._reply(c, sam.SW3_READ_FAILED)
        return reply

    sim.sam._read = refuse
    sim.place(CARD)
    cred = rec.credentials.get(timeout=3)
    assert not cred.readable
    time.sleep(0.5)
    assert rec.credentials.empty() and len(rec.named("card_unreadable")) == 1
    reads = [h for h in sim.sam.history if h[0] == sam.CMD_READ]
    assert len(reads) == 3  # the read and its two retries, then the card is left alone


def test_sam_falling_silent_after_a_find_is_an_unreadable_tap_and_a_fault(
    sim: SimulatedReaderPort, reader: tuple[CardReader, Recorder]
) -> None:
    """`silent` once the card was found (from the select's reply on): the citizen hears
    "tap again", the reader is then found dead and reported, and after it recovers the card
    still lying there is not a second tap."""
    r, rec = reader
    original = sim.sam._select

    def go_silent(c: Any) -> bytes | None:
        sim.control("silent", [])
        reply: bytes | None = original(c)
        return reply

    sim.sam._select = go_silent
    sim.place(CARD)
    cred = rec.credentials.get(timeout=2)
    assert not cred.readable
    (event,) = rec.named("card_unreadable")
    assert "select" in event["error"]
    deadline = time.monotonic() + 3
    while not rec.named("reader_init_failed"):  # a fault for the agent: spoken, journalled
        assert time.monotonic() < deadline, rec.events
        time.sleep(0.05)
    sim.sam._select = original
    sim.control("silent off", [])
    deadline = time.monotonic() + 3
    while not r.health()["connected"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    assert rec.credentials.empty() and len(rec.named("card_unreadable")) == 1
    sim.remove()
    time.sleep(0.15)
    sim.place(CARD)
    assert rec.credentials.get(timeout=3).readable
