"""The card reader source against the simulated SAM on a real pty."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.sources.cardreader import CardReader
from device.sources.credentials import Credential
from firmware_bridge.idcard import make_id_number
from firmware_bridge.samsim import SimulatedSam
from firmware_bridge.simserve import SimulatedReaderPort

CARD = {
    "card_type": "resident",
    "name": "张三",
    "sex": "1",
    "nation": "01",
    "birth": "1990-03-07",
    "address": "北京市东城区东华门街道1号",
    "id_number": make_id_number("110101", "19900307", "451"),
    "authority": "北京市公安局东城分局",
    "valid_from": "2020-01-01",
    "valid_to": "长期",
}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatedReaderPort]:
    port = SimulatedReaderPort(SimulatedSam(), link=tmp_path / "reader").start()
    yield port
    port.stop()


@pytest.fixture
def reader(sim: SimulatedReaderPort) -> Iterator[tuple[CardReader, queue.Queue[Credential]]]:
    got: queue.Queue[Credential] = queue.Queue()
    r = CardReader(sim.path, poll_interval_s=0.02, reconnect_interval_s=0.1)
    r.start(got.put)
    yield r, got
    r.stop()


def wait_connected(r: CardReader, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not r.health()["connected"]:
        assert time.monotonic() < deadline, r.health()
        time.sleep(0.02)


def test_one_tap_per_presence(
    sim: SimulatedReaderPort, reader: tuple[CardReader, queue.Queue[Credential]]
) -> None:
    r, got = reader
    wait_connected(r)
    sim.place(CARD)
    cred = got.get(timeout=3)
    assert cred.id_number == CARD["id_number"] and cred.checksum_ok and cred.valid_to == "长期"
    assert cred.completed_at <= time.monotonic()
    time.sleep(0.5)  # the card stays on the reader: no second tap
    assert got.empty()
    sim.remove()
    time.sleep(0.1)
    sim.place(CARD)
    assert got.get(timeout=3).id_number == CARD["id_number"]
    assert r.health()["reads"] == 2


def test_failed_read_is_retried_and_counted(
    sim: SimulatedReaderPort, reader: tuple[CardReader, queue.Queue[Credential]]
) -> None:
    r, got = reader
    wait_connected(r)
    sim.sam.fail_read_next = True
    sim.place(CARD)
    assert got.get(timeout=3).id_number == CARD["id_number"]
    time.sleep(0.3)
    assert got.empty()  # the retried read is still one tap
    errors = r.health()["errors"]
    assert errors.get("status_41") == 1


@pytest.mark.parametrize("poll_s", [0.02, 0.1])
def test_unplug_and_replug_recovers(sim: SimulatedReaderPort, poll_s: float) -> None:
    got: queue.Queue[Credential] = queue.Queue()
    events: list[str] = []
    r = CardReader(sim.path, poll_interval_s=poll_s, reconnect_interval_s=0.1)
    r.start(got.put, lambda what, _detail: events.append(what))
    try:
        wait_connected(r)
        for _ in range(3):  # the reader thread must survive every way pyserial notices
            sim.unplug()
            deadline = time.monotonic() + 3
            while r.health()["connected"]:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            sim.replug()
            t0 = time.monotonic()
            wait_connected(r)
            assert time.monotonic() - t0 < 2.0
            sim.place(CARD)
            assert got.get(timeout=3).id_number == CARD["id_number"]
            sim.remove()
        assert events.count("reader_lost") == 3 and events.count("reader_ready") == 4
    finally:
        r.stop()
    assert (
        r.health()["errors"].get("disconnects", 0) + r.health()["errors"].get("unresponsive", 0)
        >= 1
    )


def test_checksum_error_in_reply_is_counted(
    sim: SimulatedReaderPort, reader: tuple[CardReader, queue.Queue[Credential]]
) -> None:
    r, got = reader
    wait_connected(r)
    sim.sam.corrupt_next = True  # the next find reply is corrupt
    time.sleep(0.3)
    assert r.health()["errors"].get("ChecksumError", 0) >= 1
    sim.place(CARD)
    assert got.get(timeout=3).id_number == CARD["id_number"]


def test_control_socket_places_cards(tmp_path: Path) -> None:
    import socket

    from firmware_bridge.simserve import serve_control_socket

    with SimulatedReaderPort(SimulatedSam(), link=tmp_path / "r") as port:
        server = serve_control_socket(port, [CARD], "127.0.0.1", 0)
        try:
            addr = server.getsockname()
            with socket.create_connection(addr, timeout=2) as conn, conn.makefile("rw") as f:
                f.write("place 0\n")
                f.flush()
                assert f.readline().startswith("placed")
                assert port.sam.present
                f.write("slow 0.25\n")
                f.flush()
                assert f.readline().strip() == "reply delay 0.25 s"
                f.write("remove\n")
                f.flush()
                assert f.readline().strip() == "removed"
                assert not port.sam.present
        finally:
            server.close()


def test_unreadable_card_is_still_a_tap(sim: SimulatedReaderPort) -> None:
    got: queue.Queue[Credential] = queue.Queue()
    events: list[str] = []
    r = CardReader(sim.path, poll_interval_s=0.02, read_retries=0)
    r.start(got.put, lambda what, _detail: events.append(what))
    try:
        wait_connected(r)
        sim.sam.fail_read_next = True
        sim.place(CARD)
        cred = got.get(timeout=3)
        assert not cred.readable and cred.id_number == "" and "card_unreadable" in events
    finally:
        r.stop()
