"""Social-security card (社会保障卡) source: a contact CPU card read with plain APDUs.

The kiosk needs one field, the social-security number (= the citizen's ID number), and then
verifies it online exactly like an ID number. The APDU sequence comes from
``shared/protocols/idcard-sam.md`` ("Social-security card"); EF05 and EF06 need no PIN::

    00 A4 04 00 0F 73 78 31 2E 73 68 2E C9 E7 BB E1 B1 A3 D5 CF
        SELECT by DF name, Lc 0x0F = 15 bytes: "sx1.sh." (7 ASCII) + "社会保障" (4 × 2 GBK)
    00 A4 02 00 02 EF 06          SELECT EF06 (Lc 2: file id EF 06) in that application
    00 B2 08 00 14                READ RECORD 8 of the current EF, Le 0x14 = 20 bytes:
                                  tag 08, length 0x12 = 18, then 18 ASCII characters
    (optional) 00 B2 07 2C 0B     READ RECORD 7 by short file id: P2 0x2C = SFI 5 << 3 | 0b100
                                  ("P1 is a record number"), so EF05 needs no SELECT;
                                  Le 0x0B = 2 header bytes + the 9-character card number

Every step must end with SW1 SW2 = 90 00. T=0 cards may answer a SELECT with ``61 xx``
(xx bytes waiting: fetched with GET RESPONSE ``00 C0 00 00 xx``) and a READ RECORD with
``6C xx`` (wrong Le: repeated with Le = xx); both are followed, anything else is a failure.
Each record starts with 2 bytes of tag + length, which are checked.

Backends have the gpiozero shape: :class:`PcscCardFactory` (pyscard, the optional ``sscard``
extra, talking to ``pcscd``) and the in-package :class:`SimulatedCardSlot` holding
:class:`SimulatedSsCard` objects that answer like a real card and record every APDU.
:class:`SsCardReader` polls a factory on its own thread and hands one credential per card
insertion to the agent (the callback uses ``loop.call_soon_threadsafe``). Neither the number
nor any record bytes are ever logged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from device.errors import (
    CardDataError,
    CardRemoved,
    CardStatusError,
    CardUnresponsive,
    SsCardError,
    SsReaderLost,
)
from device.sources.credentials import Credential
from device.sources.threaded import ThreadedSource
from firmware_bridge.idcard import id_checksum_ok

log = logging.getLogger(__name__)

#: "sx1.sh.社会保障" in GBK: the social-security application's DF name (15 bytes).
SSC_AID = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")
SELECT_SSC_APP = [0x00, 0xA4, 0x04, 0x00, len(SSC_AID), *SSC_AID]
SELECT_EF06 = [0x00, 0xA4, 0x02, 0x00, 0x02, 0xEF, 0x06]
READ_SSN = [0x00, 0xB2, 0x08, 0x00, 0x14]  # record 8 of EF06: tag 08, len 18
READ_CARD_NUMBER = [0x00, 0xB2, 0x07, 0x2C, 0x0B]  # record 7 of SFI 5 (EF05): tag 07, len 9

TAG_CARD_NUMBER = 0x07
TAG_SSN = 0x08
TAG_NAME = 0x09
TAG_SEX = 0x0A
TAG_BIRTH = 0x0D

SW_OK = (0x90, 0x00)
_SW_TEXT = {
    (0x62, 0x82): "end of record reached before Le bytes",
    (0x67, 0x00): "wrong length",
    (0x69, 0x82): "security status not satisfied",
    (0x69, 0x85): "conditions of use not satisfied",
    (0x69, 0x86): "command not allowed (no current EF)",
    (0x6A, 0x82): "file or application not found",
    (0x6A, 0x83): "record not found",
    (0x6A, 0x86): "incorrect P1 P2",
    (0x6D, 0x00): "instruction not supported",
    (0x6E, 0x00): "class not supported",
}
_SSN_SHAPE = re.compile(r"[0-9]{17}[0-9Xx]")
_CARD_NUMBER_SHAPE = re.compile(r"[0-9A-Z]{9}")


def sw_text(sw1: int, sw2: int) -> str:
    """A short English meaning of a status word."""
    return _SW_TEXT.get((sw1, sw2), "unexpected status")


def hexify(apdu: Sequence[int]) -> str:
    """``00 A4 04 00 …`` (for error messages about commands, never about card data)."""
    return " ".join(f"{b:02X}" for b in apdu)


# -- the backend protocol ------------------------------------------------------------------


class CardConnection(Protocol):
    """One powered-up card: pyscard's ``CardConnection`` shape."""

    def transmit(self, apdu: list[int]) -> tuple[list[int], int, int]:
        """Send one command APDU; return ``(data, sw1, sw2)``. Raises :class:`CardRemoved`."""
        ...

    def disconnect(self) -> None:
        """Release the card."""
        ...


class CardFactory(Protocol):
    """A card slot: :meth:`connect` returns the card in it, or None when it is empty."""

    name: str

    def connect(self) -> CardConnection | None:
        """Power up the card in the slot (None: no card). Raises :class:`SsReaderLost`
        when the reader itself is gone, :class:`CardUnresponsive` for a mute card."""
        ...


# -- the APDU sequence ---------------------------------------------------------------------


@dataclass(frozen=True)
class SsCardRead:
    """What one read produced; the number stays out of ``repr``."""

    ssn: str = field(repr=False)
    checksum_ok: bool
    card_number: str = field(default="", repr=False)


def _exchange(conn: CardConnection, apdu: list[int]) -> tuple[list[int], int, int]:
    """One APDU, with the reply checked for shape (a backend may hand back anything)."""
    try:
        reply = conn.transmit(list(apdu))
    except SsCardError:
        raise
    except Exception as exc:  # a backend's own error type: the card went away mid-read
        raise CardRemoved(f"{hexify(apdu[:4])}: {type(exc).__name__}") from None
    if not isinstance(reply, tuple | list) or len(reply) != 3:
        raise CardDataError(f"{hexify(apdu[:4])}: reply is not (data, sw1, sw2)")
    data, sw1, sw2 = reply
    if not isinstance(data, list | tuple | bytes | bytearray):
        raise CardDataError(f"{hexify(apdu[:4])}: reply data is not a byte list")
    values = list(data)
    for item in (*values, sw1, sw2):
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 0xFF:
            raise CardDataError(f"{hexify(apdu[:4])}: reply holds something that is not a byte")
    return values, sw1, sw2


def command(conn: CardConnection, apdu: list[int], step: str) -> list[int]:
    """Send ``apdu``; follow ``61 xx`` (GET RESPONSE) and ``6C xx`` (repeat with Le = xx);
    return the data of a 90 00 answer or raise :class:`CardStatusError`."""
    data, sw1, sw2 = _exchange(conn, apdu)
    if sw1 == 0x6C and len(apdu) == 5:  # wrong Le: the card says how many bytes it has
        data, sw1, sw2 = _exchange(conn, [*apdu[:4], sw2])
    collected = list(data)
    for _ in range(8):  # T=0: response bytes waiting; a few rounds at most
        if sw1 != 0x61:
            break
        data, sw1, sw2 = _exchange(conn, [0x00, 0xC0, 0x00, 0x00, sw2])
        collected += data
    if (sw1, sw2) != SW_OK:
        raise CardStatusError(step, sw1, sw2, sw_text(sw1, sw2))
    return collected


def parse_record(data: Sequence[int], tag: int, step: str) -> bytes:
    """The value of a ``tag | length | value`` record (extra trailing bytes are ignored)."""
    if len(data) < 2:
        raise CardDataError(f"{step}: record shorter than its 2-byte header")
    if data[0] != tag:
        raise CardDataError(f"{step}: record tag {data[0]:02X}, expected {tag:02X}")
    length = data[1]
    if len(data) < 2 + length:
        raise CardDataError(f"{step}: record says {length} bytes, carries {len(data) - 2}")
    return bytes(data[2 : 2 + length])


def _text(value: bytes, step: str) -> str:
    """ASCII record text without the NUL/space padding."""
    try:
        return value.rstrip(b"\x00 \xff").decode("ascii")
    except UnicodeDecodeError:
        raise CardDataError(f"{step}: not ASCII text") from None


def read_ss_card(conn: CardConnection, *, with_card_number: bool = False) -> SsCardRead:
    """Run the APDU sequence and return the social-security number.

    Raises :class:`CardStatusError` (e.g. ``6A 82``: not a social-security card),
    :class:`CardRemoved` and :class:`CardDataError`; the messages never hold card data.
    """
    command(conn, SELECT_SSC_APP, "select application")
    card_number = ""
    if with_card_number:
        raw = command(conn, READ_CARD_NUMBER, "read card number")
        card_number = _text(parse_record(raw, TAG_CARD_NUMBER, "card number"), "card number")
        if not _CARD_NUMBER_SHAPE.fullmatch(card_number):
            raise CardDataError("card number: not 9 letters or digits")
    command(conn, SELECT_EF06, "select EF06")
    raw = command(conn, READ_SSN, "read social-security number")
    ssn = _text(parse_record(raw, TAG_SSN, "social-security number"), "social-security number")
    if not _SSN_SHAPE.fullmatch(ssn):
        raise CardDataError("social-security number: not 17 digits and a check character")
    ssn = ssn.upper()
    return SsCardRead(ssn, bool(id_checksum_ok(ssn)), card_number)


# -- the reader thread ---------------------------------------------------------------------


class SsCardReader(ThreadedSource):
    """Credential source for social-security cards, on its own thread (the CardReader shape).

    Polls ``card_factory`` every ``poll_interval_s``; a card is read once per insertion (it
    must leave the slot before it counts again). A card that cannot be read (wrong
    application, removed mid-read, garbage, mute) still produces a credential with
    ``readable=False`` — the citizen always gets a prompt — and a ``card_unreadable`` event.
    """

    thread_name = "sscard-reader"

    def __init__(
        self,
        card_factory: CardFactory,
        *,
        poll_interval_s: float = 0.2,
        reconnect_interval_s: float = 1.0,
    ) -> None:
        self.factory = card_factory
        self._poll = poll_interval_s
        self._reconnect = reconnect_interval_s
        super().__init__(join_timeout_s=poll_interval_s + reconnect_interval_s + 5)
        self.connected = False
        self.reads = 0
        self.unreadable = 0
        self.last_read_at: str | None = None
        self.last_cycle_s: float | None = None

    def health(self) -> dict[str, Any]:
        """What the heartbeat reports about the social-security card reader."""
        with self._lock:
            return {
                "backend": self.factory.name,
                "connected": self.connected,
                "last_read_at": self.last_read_at,
                "reads": self.reads,
                "unreadable": self.unreadable,
                "last_cycle_ms": (
                    round(self.last_cycle_s * 1000, 1) if self.last_cycle_s is not None else None
                ),
                "errors": dict(self.errors),
            }

    # -- the loop ----------------------------------------------------------------------------
    def _set_connected(self) -> None:
        """The reader answers: announce it once per outage."""
        with self._lock:
            changed = not self.connected
            self.connected = True
        if changed:
            log.info("social-security card reader %s ready", self.factory.name)
            self._event("reader_ready", reader=self.factory.name)

    def _run(self) -> None:
        handled = False  # the card now in the slot has been read (or failed) already
        announced_down = False
        while not self._stop.is_set():
            try:
                conn = self.factory.connect()
            except CardUnresponsive as exc:
                self._set_connected()
                announced_down = False
                if not handled:
                    handled = True
                    self._count("unresponsive")
                    self._unreadable(f"card does not answer: {exc}")
                self._stop.wait(self._poll)
                continue
            except Exception as exc:  # SsReaderLost, or a backend error we do not know
                with self._lock:
                    was_up, self.connected = self.connected, False
                if was_up or not announced_down:
                    log.warning("social-security card reader %s lost: %s", self.factory.name, exc)
                    self._event("reader_lost", error=f"{type(exc).__name__}: {exc}")
                    announced_down = True
                self._count("reader_lost")
                handled = False
                self._stop.wait(self._reconnect)
                continue
            self._set_connected()
            announced_down = False
            if conn is None:
                handled = False
            else:
                try:
                    if not handled:
                        handled = True
                        self._read(conn)
                finally:
                    with contextlib.suppress(Exception):
                        conn.disconnect()
            self._stop.wait(self._poll)

    def _read(self, conn: CardConnection) -> None:
        start = time.monotonic()
        try:
            result = read_ss_card(conn)
        except CardRemoved as exc:
            self._count("removed")
            self._unreadable(f"card removed during the read ({exc})")
            return
        except CardStatusError as exc:
            self._count(f"sw_{exc.sw[0]:02X}{exc.sw[1]:02X}")
            self._unreadable(str(exc))
            return
        except CardDataError as exc:
            self._count("garbage")
            self._unreadable(str(exc))
            return
        except Exception as exc:  # a backend bug must not kill the reader thread
            log.exception("social-security card read failed")
            self._count("error")
            self._unreadable(type(exc).__name__)
            return
        completed_at = time.monotonic()
        with self._lock:
            self.reads += 1
            self.last_cycle_s = completed_at - start
            self.last_read_at = dt.datetime.now(dt.UTC).isoformat()
        if not result.checksum_ok:
            self._count("bad_checksum")
        self._deliver(
            Credential(
                kind="ss_card",
                id_number=result.ssn,
                completed_at=completed_at,
                source="sscard",
                checksum_ok=result.checksum_ok,
            )
        )

    def _unreadable(self, why: str) -> None:
        """A card was presented but could not be read: the citizen still gets a prompt."""
        log.warning("social-security card could not be read: %s", why)
        with self._lock:
            self.unreadable += 1
        self._event("card_unreadable", error=why)
        self._deliver(
            Credential(
                kind="ss_card",
                id_number="",
                completed_at=time.monotonic(),
                source="sscard",
                readable=False,
                checksum_ok=False,
            )
        )

    def _deliver(self, cred: Credential) -> None:
        if self._on_credential is None:
            return
        try:
            self._on_credential(cred)
        except Exception:
            log.exception("sscard credential handler failed")


# -- PC/SC backend (pyscard, optional) -----------------------------------------------------


class _PcscConnection:
    """pyscard's ``CardConnection``, its exceptions mapped onto ours."""

    def __init__(self, connection: Any, exceptions: Any) -> None:
        self._connection = connection
        self._exceptions = exceptions

    def transmit(self, apdu: list[int]) -> tuple[list[int], int, int]:
        try:
            data, sw1, sw2 = self._connection.transmit(list(apdu))
        except self._exceptions.SmartcardException as exc:
            raise CardRemoved(f"{hexify(apdu[:4])}: {type(exc).__name__}") from None
        return list(data), int(sw1), int(sw2)

    def disconnect(self) -> None:
        with contextlib.suppress(Exception):
            self._connection.disconnect()


class PcscCardFactory:
    """Cards through PC/SC (``pcscd`` on Linux) with pyscard, imported on first use.

    Install with ``pip install 'siheyi[sscard]'`` (pyscard) and run ``pcscd``.
    ``reader_name``: use the first reader whose name contains it (default: the first reader).
    """

    def __init__(self, reader_name: str | None = None) -> None:
        self.reader_name = reader_name
        self.name = f"pcsc:{reader_name}" if reader_name else "pcsc"

    def _modules(self) -> tuple[Any, Any]:
        try:
            system = importlib.import_module("smartcard.System")
            exceptions = importlib.import_module("smartcard.Exceptions")
        except ImportError:
            raise SsReaderLost(
                "pyscard is not installed (pip install 'siheyi[sscard]', and run pcscd)"
            ) from None
        return system, exceptions

    def connect(self) -> CardConnection | None:
        """The card in the chosen reader, or None; :class:`SsReaderLost` without a reader."""
        system, exceptions = self._modules()
        try:
            readers = list(system.readers())
        except Exception as exc:  # EstablishContextException: pcscd not running
            raise SsReaderLost(f"PC/SC not available: {type(exc).__name__}: {exc}") from None
        chosen = [r for r in readers if self.reader_name is None or self.reader_name in str(r)]
        if not chosen:
            what = f"matching {self.reader_name!r}" if self.reader_name else "at all"
            raise SsReaderLost(f"no PC/SC reader {what}")
        connection = chosen[0].createConnection()
        try:
            connection.connect()
        except exceptions.NoCardException:
            return None
        except exceptions.SmartcardException as exc:
            raise CardUnresponsive(f"{type(exc).__name__}: {exc}") from None
        return _PcscConnection(connection, exceptions)


# -- simulated card and slot ---------------------------------------------------------------


def bcd(digits: str) -> bytes:
    """Packed BCD: ``"19900307"`` → ``19 90 03 07``."""
    if len(digits) % 2 or not digits.isdigit():
        raise ValueError("need an even number of digits")
    return bytes(int(digits[i]) << 4 | int(digits[i + 1]) for i in range(0, len(digits), 2))


def _record(tag: int, value: bytes, size: int) -> bytes:
    """``tag | size | value`` padded with NUL to ``size`` bytes."""
    if len(value) > size:
        raise ValueError(f"record {tag:02X}: {len(value)} bytes do not fit in {size}")
    return bytes([tag, size]) + value.ljust(size, b"\x00")


class SimulatedSsCard:
    """A social-security card that answers APDUs like a real one (ISO 7816-4 status words).

    Files: the application ``SSC_AID`` with EF05 (SFI 5; record 7 = card number) and EF06
    (SFI 6; record 8 = social-security number, 9 = name in GBK, 10 = sex, 13 = birth date in
    BCD). Wrong class ``6E 00``, unknown instruction ``6D 00``, bad length ``67 00``, unknown
    application or file ``6A 82``, READ RECORD without a current EF ``69 86``, missing record
    ``6A 83``, bad P1/P2 ``6A 86``, wrong Le ``6C xx``. ``t0=True`` answers a SELECT by name
    with ``61 xx`` and the FCI through GET RESPONSE, like T=0 cards do.

    Faults: ``application=False`` (another kind of card: 6A 82), ``remove_after=n`` (the card
    leaves the field on APDU n + 1: :class:`CardRemoved`), ``records`` overriding raw record
    bytes (``{(0xEF06, 8): b"..."}``) and ``mute=True`` (cannot be powered up).
    """

    def __init__(
        self,
        ssn: str,
        *,
        name: str = "张三",
        sex: str = "1",
        birth: str = "19900307",
        card_number: str = "A00000001",
        application: bool = True,
        t0: bool = False,
        remove_after: int | None = None,
        mute: bool = False,
        records: Mapping[tuple[int, int], bytes] | None = None,
    ) -> None:
        self.application = application
        self.t0 = t0
        self.remove_after = remove_after
        self.mute = mute
        self.removed = False
        self.apdus: list[list[int]] = []
        self.files: dict[int, dict[int, bytes]] = {
            0xEF05: {0x07: _record(TAG_CARD_NUMBER, card_number.encode("ascii"), 9)},
            0xEF06: {
                0x08: _record(TAG_SSN, ssn.encode("ascii"), 18),
                0x09: _record(TAG_NAME, name.encode("gbk"), 30),
                0x0A: _record(TAG_SEX, sex.encode("ascii"), 1),
                0x0D: _record(TAG_BIRTH, bcd(birth), 4),
            },
        }
        for (ef, number), raw in (records or {}).items():
            self.files.setdefault(ef, {})[number] = bytes(raw)
        self._app_selected = False
        self._current_ef: int | None = None
        self._pending: list[int] = []

    def reset(self) -> None:
        """Power-up state: nothing selected (a new connection)."""
        self._app_selected = False
        self._current_ef = None
        self._pending = []

    def transmit(self, apdu: list[int]) -> tuple[list[int], int, int]:
        """Answer one command APDU."""
        if self.removed:
            raise CardRemoved("card is not in the field")
        if self.remove_after is not None and len(self.apdus) >= self.remove_after:
            self.removed = True
            raise CardRemoved("card left the field")
        self.apdus.append(list(apdu))
        if len(apdu) < 4:
            return [], 0x67, 0x00
        cla, ins, p1, p2 = apdu[:4]
        if cla != 0x00:
            return [], 0x6E, 0x00
        if ins == 0xA4:
            return self._select(p1, p2, apdu[4:])
        if ins == 0xB2:
            return self._read_record(p1, p2, apdu[4:])
        if ins == 0xC0:
            return self._get_response(apdu[4:])
        return [], 0x6D, 0x00

    def _select(self, p1: int, p2: int, body: list[int]) -> tuple[list[int], int, int]:
        if not body or len(body) != 1 + body[0]:
            return [], 0x67, 0x00
        data = bytes(body[1:])
        if p1 == 0x04 and p2 == 0x00:
            if not self.application or data != SSC_AID:
                return [], 0x6A, 0x82
            self._app_selected = True
            self._current_ef = None
            fci = [0x6F, len(SSC_AID) + 2, 0x84, len(SSC_AID), *SSC_AID]
            if self.t0:
                self._pending = fci
                return [], 0x61, len(fci)
            return [], 0x90, 0x00
        if p1 == 0x02 and p2 == 0x00:
            if len(data) != 2:
                return [], 0x67, 0x00
            ef = data[0] << 8 | data[1]
            if not self._app_selected or ef not in self.files:
                return [], 0x6A, 0x82
            self._current_ef = ef
            return [], 0x90, 0x00
        return [], 0x6A, 0x86

    def _read_record(self, p1: int, p2: int, body: list[int]) -> tuple[list[int], int, int]:
        if len(body) != 1:
            return [], 0x67, 0x00
        sfi, mode = p2 >> 3, p2 & 0x07
        if mode not in (0x04, 0x00) or p1 == 0:
            return [], 0x6A, 0x86
        if sfi:
            ef = 0xEF00 | sfi
            if not self._app_selected or ef not in self.files:
                return [], 0x6A, 0x82
        elif self._current_ef is None:
            return [], 0x69, 0x86
        else:
            ef = self._current_ef
        record = self.files[ef].get(p1)
        if record is None:
            return [], 0x6A, 0x83
        le = body[0] or 256
        if le != len(record) and body[0] != 0:
            return [], 0x6C, len(record)
        return list(record), 0x90, 0x00

    def _get_response(self, body: list[int]) -> tuple[list[int], int, int]:
        if not self._pending:
            return [], 0x69, 0x85
        if len(body) != 1:
            return [], 0x67, 0x00
        le = body[0] or 256
        if le != len(self._pending):
            return [], 0x6C, len(self._pending)
        data, self._pending = self._pending, []
        return data, 0x90, 0x00


class _SlotConnection:
    """A connection to the card in a :class:`SimulatedCardSlot`; records every APDU."""

    def __init__(self, slot: SimulatedCardSlot, card: SimulatedSsCard) -> None:
        self._slot = slot
        self._card = card

    def transmit(self, apdu: list[int]) -> tuple[list[int], int, int]:
        with self._slot.lock:
            self._slot.apdus.append(list(apdu))
            if self._slot.card is not self._card:
                raise CardRemoved("card was taken out")
        return self._card.transmit(apdu)

    def disconnect(self) -> None:
        with self._slot.lock:
            self._slot.disconnects += 1


class SimulatedCardSlot:
    """A simulated PC/SC slot: tests :meth:`insert` and :meth:`remove` cards and
    :meth:`unplug` the reader; ``apdus`` records every command sent, in order."""

    name = "simulated"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.card: SimulatedSsCard | None = None
        self.plugged = True
        self.apdus: list[list[int]] = []
        self.connects = 0
        self.disconnects = 0

    def insert(self, card: SimulatedSsCard) -> None:
        """Put ``card`` in the slot (replacing any other)."""
        with self.lock:
            card.removed = False
            card.reset()
            self.card = card

    def remove(self) -> None:
        """Take the card out."""
        with self.lock:
            if self.card is not None:
                self.card.removed = True
            self.card = None

    def unplug(self) -> None:
        """The reader disappears (USB unplugged)."""
        with self.lock:
            self.plugged = False

    def plug(self) -> None:
        """The reader comes back."""
        with self.lock:
            self.plugged = True

    def connect(self) -> CardConnection | None:
        """The card now in the slot, powered up; None when empty."""
        with self.lock:
            if not self.plugged:
                raise SsReaderLost("simulated reader unplugged")
            card = self.card
            if card is not None and card.removed:  # it left the field on its own
                self.card = card = None
            if card is None:
                return None
            if card.mute:
                raise CardUnresponsive("card does not answer to reset")
            self.connects += 1
            card.reset()
            return _SlotConnection(self, card)
