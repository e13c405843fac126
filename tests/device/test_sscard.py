"""Social-security card source: exact APDUs, the simulated card, the reader thread, PC/SC."""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from device.sources.credentials import Credential
from device.sources.sscard import (
    READ_SSN,
    CardDataError,
    CardRemoved,
    CardStatusError,
    PcscCardFactory,
    SimulatedCardSlot,
    SimulatedSsCard,
    SsCardReader,
    SsReaderLost,
    bcd,
    command,
    parse_record,
    read_ss_card,
)
from firmware_bridge.idcard import make_id_number

SSN = make_id_number("110105", "19491231", "002")  # 11010519491231002X
BAD_SSN = SSN[:17] + ("0" if SSN[17] != "0" else "1")


def apdu(text: str) -> list[int]:
    return list(bytes.fromhex(text))


# The sequence exactly as shared/protocols/idcard-sam.md spells it.
SELECT_APP = apdu("00 A4 04 00 0F 73 78 31 2E 73 68 2E C9 E7 BB E1 B1 A3 D5 CF")
SELECT_EF06 = apdu("00 A4 02 00 02 EF 06")
READ_NUMBER = apdu("00 B2 08 00 14")
READ_CARD_NO = apdu("00 B2 07 2C 0B")


def test_aid_is_the_gbk_application_name() -> None:
    assert bytes(SELECT_APP[5:]) == "sx1.sh.社会保障".encode("gbk")
    assert SELECT_APP[4] == 15


def test_exact_apdu_sequence_and_full_read() -> None:
    card = SimulatedSsCard(SSN)
    result = read_ss_card(card)
    assert card.apdus == [SELECT_APP, SELECT_EF06, READ_NUMBER]
    assert result.ssn == SSN and result.checksum_ok and result.card_number == ""
    assert SSN not in repr(result)


def test_card_number_by_short_file_id() -> None:
    card = SimulatedSsCard(SSN, card_number="B12345678")
    result = read_ss_card(card, with_card_number=True)
    # P2 0x2C = SFI 5 << 3 | 0b100: EF05 is read without being selected.
    assert card.apdus == [SELECT_APP, READ_CARD_NO, SELECT_EF06, READ_NUMBER]
    assert result.card_number == "B12345678"


def test_simulated_records_are_realistic() -> None:
    card = SimulatedSsCard(SSN, name="欧阳娜娜", sex="2", birth="19491231")
    assert command(card, SELECT_APP, "app") == []
    assert command(card, SELECT_EF06, "ef06") == []
    raw = command(card, apdu("00 B2 08 00 14"), "ssn")
    assert raw[:2] == [0x08, 0x12] and bytes(raw[2:]).decode() == SSN
    name = command(card, apdu("00 B2 09 00 20"), "name")
    assert name[:2] == [0x09, 30]
    assert parse_record(name, 0x09, "name").rstrip(b"\x00").decode("gbk") == "欧阳娜娜"
    assert command(card, apdu("00 B2 0A 00 03"), "sex") == [0x0A, 0x01, ord("2")]
    assert command(card, apdu("00 B2 0D 00 06"), "birth") == [0x0D, 0x04, 0x19, 0x49, 0x12, 0x31]
    assert bcd("19900307") == bytes([0x19, 0x90, 0x03, 0x07])


@pytest.mark.parametrize(
    ("setup", "command_hex", "sw"),
    [
        ([], "00 B2 08 00 14", (0x69, 0x86)),  # no current EF
        ([], "00 A4 02 00 02 EF 06", (0x6A, 0x82)),  # EF06 outside the application
        (["app"], "00 A4 04 00 03 A0 00 01", (0x6A, 0x82)),  # unknown application
        (["app"], "00 A4 02 00 02 EF 09", (0x6A, 0x82)),  # no such EF
        (["app", "ef06"], "00 B2 0F 00 14", (0x6A, 0x83)),  # record not found
        (["app", "ef06"], "00 B2 08 00 10", (0x6C, 0x14)),  # wrong Le: the right one
        (["app", "ef06"], "00 B2 08 03 14", (0x6A, 0x86)),  # bad P2
        (["app"], "00 A4 02 00 03 EF 06", (0x67, 0x00)),  # Lc does not match
        (["app"], "80 A4 04 00 00", (0x6E, 0x00)),  # class
        (["app"], "00 84 00 00 08", (0x6D, 0x00)),  # GET CHALLENGE: not supported here
        (["app"], "00 C0 00 00 10", (0x69, 0x85)),  # GET RESPONSE with nothing pending
        ([], "00 A4", (0x67, 0x00)),
    ],
)
def test_simulated_status_words(setup: list[str], command_hex: str, sw: tuple[int, int]) -> None:
    card = SimulatedSsCard(SSN)
    steps = {"app": SELECT_APP, "ef06": SELECT_EF06}
    for step in setup:
        assert card.transmit(steps[step])[1:] == (0x90, 0x00)
    data, sw1, sw2 = card.transmit(apdu(command_hex))
    assert (sw1, sw2) == sw and data == []


def test_t0_card_get_response_and_wrong_le_are_followed() -> None:
    card = SimulatedSsCard(SSN, t0=True)
    assert read_ss_card(card).ssn == SSN
    fci_len = 2 + 2 + 15
    assert card.apdus == [SELECT_APP, [0x00, 0xC0, 0x00, 0x00, fci_len], SELECT_EF06, READ_NUMBER]
    card = SimulatedSsCard(SSN)
    command(card, SELECT_APP, "app")
    command(card, SELECT_EF06, "ef06")
    short = [0x00, 0xB2, 0x08, 0x00, 0x10]
    assert len(command(card, short, "ssn")) == 20
    assert card.apdus[-2:] == [short, READ_SSN]


def test_wrong_application_is_a_status_error() -> None:
    with pytest.raises(CardStatusError) as info:
        read_ss_card(SimulatedSsCard(SSN, application=False))
    assert info.value.sw == (0x6A, 0x82)
    assert str(info.value) == "select application: SW 6A 82 (file or application not found)"


@pytest.mark.parametrize(
    "raw",
    [
        bytes([0x09, 0x12]) + SSN.encode(),  # wrong tag
        bytes([0x08, 0x12]) + SSN.encode()[:10],  # shorter than its length byte
        bytes([0x08]),  # no header
        bytes([0x08, 0x12]) + b"ABCDEFGHIJKLMNOPQR",  # not a number
        bytes([0x08, 0x12]) + bytes(range(0x80, 0x92)),  # not ASCII
        bytes([0x08, 0x12]) + b"1101051949123100",  # 16 characters
    ],
)
def test_garbage_records_are_data_errors(raw: bytes) -> None:
    card = SimulatedSsCard(SSN, records={(0xEF06, 8): raw + b"\x00" * max(0, 20 - len(raw))})
    with pytest.raises(CardDataError):
        read_ss_card(card)


class Nonsense:
    """A backend that answers with things that are not APDU replies."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    def transmit(self, apdu: list[int]) -> Any:
        return self.reply

    def disconnect(self) -> None:
        pass


@pytest.mark.parametrize(
    "reply",
    [None, ([], 0x90), ([256], 0x90, 0x00), ("90", 0x90, 0x00), ([], 0x90, True), b"\x90\x00"],
)
def test_garbage_replies_are_data_errors(reply: Any) -> None:
    with pytest.raises(CardDataError):
        read_ss_card(Nonsense(reply))


def test_removed_mid_read() -> None:
    card = SimulatedSsCard(SSN, remove_after=2)
    with pytest.raises(CardRemoved):
        read_ss_card(card)
    assert card.apdus == [SELECT_APP, SELECT_EF06]


def test_bad_checksum_is_read_but_flagged() -> None:
    result = read_ss_card(SimulatedSsCard(BAD_SSN))
    assert result.ssn == BAD_SSN and not result.checksum_ok
    assert read_ss_card(SimulatedSsCard(SSN.lower())).ssn == SSN  # lower-case x normalised


# -- the reader thread -----------------------------------------------------------------------


class Sink:
    """Collects what the reader thread hands over."""

    def __init__(self) -> None:
        self.credentials: queue.Queue[Credential] = queue.Queue()
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.threads: set[str] = set()

    def credential(self, cred: Credential) -> None:
        self.threads.add(threading.current_thread().name)
        self.credentials.put(cred)

    def event(self, what: str, detail: dict[str, Any]) -> None:
        self.events.put((what, detail))

    def next_credential(self, timeout: float = 3.0) -> Credential:
        return self.credentials.get(timeout=timeout)

    def next_event(self, what: str, timeout: float = 3.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            name, detail = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if name == what:
                return detail


@pytest.fixture
def slot() -> SimulatedCardSlot:
    return SimulatedCardSlot()


@pytest.fixture
def running(slot: SimulatedCardSlot) -> Iterator[tuple[SsCardReader, Sink]]:
    reader = SsCardReader(slot, poll_interval_s=0.01, reconnect_interval_s=0.02)
    sink = Sink()
    reader.start(sink.credential, sink.event)
    assert sink.next_event("reader_ready") == {"reader": "simulated"}
    yield reader, sink
    reader.stop()


def test_full_read_through_the_reader(
    slot: SimulatedCardSlot, running: tuple[SsCardReader, Sink]
) -> None:
    reader, sink = running
    before = time.monotonic()
    slot.insert(SimulatedSsCard(SSN))
    cred = sink.next_credential()
    assert (cred.kind, cred.id_number, cred.source) == ("ss_card", SSN, "sscard")
    assert cred.checksum_ok and cred.readable and cred.completed_at >= before
    assert sink.threads == {"sscard-reader"}
    assert slot.apdus == [SELECT_APP, SELECT_EF06, READ_NUMBER]
    health = reader.health()
    assert health["connected"] and health["reads"] == 1 and health["backend"] == "simulated"
    assert health["last_cycle_ms"] is not None and health["last_read_at"]
    assert SSN not in str(health)


def test_one_credential_per_insertion(
    slot: SimulatedCardSlot, running: tuple[SsCardReader, Sink]
) -> None:
    _, sink = running
    card = SimulatedSsCard(SSN)
    slot.insert(card)
    assert sink.next_credential().id_number == SSN
    time.sleep(0.2)  # ~20 polls with the card still in
    assert sink.credentials.empty()
    assert slot.connects > 5 and len(slot.apdus) == 3
    slot.remove()
    time.sleep(0.05)
    slot.insert(card)
    assert sink.next_credential().id_number == SSN
    assert sink.credentials.empty()


def test_wrong_application_is_an_unreadable_tap(
    slot: SimulatedCardSlot, running: tuple[SsCardReader, Sink]
) -> None:
    reader, sink = running
    slot.insert(SimulatedSsCard(SSN, application=False))  # e.g. a bank card
    cred = sink.next_credential()
    assert (cred.kind, cred.readable, cred.checksum_ok, cred.id_number) == (
        "ss_card",
        False,
        False,
        "",
    )
    assert "6A 82" in sink.next_event("card_unreadable")["error"]
    assert reader.health()["errors"] == {"sw_6A82": 1}
    time.sleep(0.1)
    assert sink.credentials.empty()  # still one tap for that insertion


def test_removed_mid_read_is_unreadable_then_reads_again(
    slot: SimulatedCardSlot, running: tuple[SsCardReader, Sink]
) -> None:
    reader, sink = running
    card = SimulatedSsCard(SSN, remove_after=2)
    slot.insert(card)
    cred = sink.next_credential()
    assert not cred.readable
    assert "removed" in sink.next_event("card_unreadable")["error"]
    assert reader.health()["errors"]["removed"] == 1
    card.remove_after = None
    time.sleep(0.05)  # the slot is seen empty: the next insertion is a new tap
    slot.insert(card)
    assert sink.next_credential().id_number == SSN


def test_garbage_and_mute_cards_are_unreadable(
    slot: SimulatedCardSlot, running: tuple[SsCardReader, Sink]
) -> None:
    reader, sink = running
    slot.insert(SimulatedSsCard(SSN, records={(0xEF06, 8): bytes(20)}))
    assert not sink.next_credential().readable
    slot.remove()
    time.sleep(0.05)
    slot.insert(SimulatedSsCard(SSN, mute=True))
    assert not sink.next_credential().readable
    time.sleep(0.1)
    assert sink.credentials.empty()
    assert reader.health()["errors"] == {"garbage": 1, "unresponsive": 1}
    assert reader.health()["unreadable"] == 2


def test_reader_lost_and_back(slot: SimulatedCardSlot, running: tuple[SsCardReader, Sink]) -> None:
    reader, sink = running
    slot.unplug()
    assert "unplugged" in sink.next_event("reader_lost")["error"]
    assert not reader.connected
    time.sleep(0.1)
    assert all(name != "reader_lost" for name, _ in list(sink.events.queue))  # once per outage
    slot.insert(SimulatedSsCard(SSN))
    slot.plug()
    assert sink.next_event("reader_ready") == {"reader": "simulated"}
    assert reader.connected
    assert sink.next_credential().id_number == SSN


def test_reader_without_event_handler_and_restart_guard(slot: SimulatedCardSlot) -> None:
    reader = SsCardReader(slot, poll_interval_s=0.01)
    got: queue.Queue[Credential] = queue.Queue()
    reader.start(got.put)
    with pytest.raises(RuntimeError):
        reader.start(got.put)
    slot.insert(SimulatedSsCard(BAD_SSN))
    cred = got.get(timeout=3)
    assert cred.id_number == BAD_SSN and not cred.checksum_ok and cred.readable
    reader.stop()


def test_the_number_is_never_logged(
    slot: SimulatedCardSlot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reader = SsCardReader(slot, poll_interval_s=0.01)
    sink = Sink()
    reader.start(sink.credential, sink.event)
    for card in (
        SimulatedSsCard(SSN),
        SimulatedSsCard(BAD_SSN),
        SimulatedSsCard(SSN, records={(0xEF06, 8): bytes([0x09, 0x12]) + SSN.encode()}),
        SimulatedSsCard(SSN, remove_after=2),
    ):
        slot.insert(card)
        cred = sink.next_credential()
        assert SSN not in repr(cred) and BAD_SSN not in repr(cred)
        slot.remove()
        time.sleep(0.03)
    reader.stop()
    events = str(list(sink.events.queue))
    for number in (SSN, BAD_SSN, SSN[:17]):
        assert number not in caplog.text and number not in events


# -- PC/SC through pyscard (a stand-in module: the real one needs pcscd and a reader) ---------


class FakeSmartcard:
    """Just enough of pyscard's ``smartcard.System`` / ``smartcard.Exceptions``."""

    class SmartcardException(Exception):
        pass

    class NoCardException(SmartcardException):
        pass

    class CardConnectionException(SmartcardException):
        pass

    def __init__(self) -> None:
        self.card: SimulatedSsCard | None = None
        self.reader_names = ["Generic USB Smart Card Reader 00 00"]
        self.sent: list[list[int]] = []
        fake = self

        class Connection:
            def connect(self) -> None:
                if fake.card is None:
                    raise fake.NoCardException("no card")
                if fake.card.mute:
                    raise fake.CardConnectionException("card is unresponsive")

            def transmit(self, apdu: list[int]) -> tuple[list[int], int, int]:
                fake.sent.append(apdu)
                if fake.card is None:
                    raise fake.CardConnectionException("card removed")
                return fake.card.transmit(apdu)

            def disconnect(self) -> None:
                pass

        class Reader:
            def __init__(self, name: str) -> None:
                self.name = name

            def __str__(self) -> str:
                return self.name

            def createConnection(self) -> Connection:
                return Connection()

        self.Reader = Reader

    def readers(self) -> list[Any]:
        return [self.Reader(n) for n in self.reader_names]


@pytest.fixture
def pyscard(monkeypatch: pytest.MonkeyPatch) -> FakeSmartcard:
    fake = FakeSmartcard()
    package = types.ModuleType("smartcard")
    system = types.ModuleType("smartcard.System")
    system.readers = fake.readers  # type: ignore[attr-defined]
    exceptions = types.ModuleType("smartcard.Exceptions")
    for name in ("SmartcardException", "NoCardException", "CardConnectionException"):
        setattr(exceptions, name, getattr(FakeSmartcard, name))
    monkeypatch.setitem(sys.modules, "smartcard", package)
    monkeypatch.setitem(sys.modules, "smartcard.System", system)
    monkeypatch.setitem(sys.modules, "smartcard.Exceptions", exceptions)
    return fake


def test_pcsc_factory_maps_pyscard(pyscard: FakeSmartcard) -> None:
    factory = PcscCardFactory()
    assert factory.connect() is None  # no card
    pyscard.card = SimulatedSsCard(SSN)
    conn = factory.connect()
    assert conn is not None
    assert read_ss_card(conn).ssn == SSN
    assert pyscard.sent == [SELECT_APP, SELECT_EF06, READ_NUMBER]
    pyscard.card = None
    with pytest.raises(CardRemoved):
        read_ss_card(conn)
    pyscard.card = SimulatedSsCard(SSN, mute=True)
    with pytest.raises(CardRemoved.__mro__[1]):  # SsCardError: CardUnresponsive
        factory.connect()
    with pytest.raises(SsReaderLost, match="matching 'ACS'"):
        PcscCardFactory("ACS").connect()
    pyscard.reader_names = []
    with pytest.raises(SsReaderLost, match="no PC/SC reader"):
        factory.connect()


def test_pcsc_factory_through_the_reader(pyscard: FakeSmartcard) -> None:
    reader = SsCardReader(PcscCardFactory("Generic"), poll_interval_s=0.01)
    sink = Sink()
    reader.start(sink.credential, sink.event)
    assert sink.next_event("reader_ready") == {"reader": "pcsc:Generic"}
    pyscard.card = SimulatedSsCard(SSN)
    assert sink.next_credential().id_number == SSN
    reader.stop()


def test_pcsc_without_pyscard_is_a_lost_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "smartcard", None)  # import fails
    with pytest.raises(SsReaderLost, match=r"siheyi\[sscard\]"):
        PcscCardFactory().connect()
