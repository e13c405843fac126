"""ID-card reader source: polls a SAM module over pyserial and emits one credential per tap.

The port is a pyserial URL (`/dev/ttyUSB0`, a pty, `socket://host:port`), so the same code talks
to a real reader, a simulated one and a reader behind a TCP bridge. The protocol itself
(frames, parsing, text decoding) is the MicroPython-compatible `firmware_bridge` code; this
module is only the host-side sequence: reset, status check, then find → select → read.

It runs on its own thread because pyserial is blocking; credentials are handed to the agent
through a callback (which uses `loop.call_soon_threadsafe`). A reader that disappears (USB
unplugged) is reopened every `reconnect_interval_s` without restarting the agent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

import serial

from device.errors import ReaderError, ReaderStatus, ReaderTimeout
from device.sources.credentials import Credential
from device.sources.threaded import ThreadedSource
from firmware_bridge import idcard, sam
from firmware_bridge.errors import ProtocolError

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """The reader thread was asked to stop."""


SerialFactory = Callable[..., Any]


class CardReader(ThreadedSource):
    """Host side of the SAM protocol, one thread, reconnecting."""

    thread_name = "card-reader"

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 115200,
        poll_interval_s: float = 0.1,
        command_timeout_s: float = 0.2,
        read_timeout_s: float = 3.0,
        reconnect_interval_s: float = 0.5,
        read_retries: int = 2,
        serial_factory: SerialFactory = serial.serial_for_url,
    ) -> None:
        self.url = url
        self._baudrate = baudrate
        self._poll = poll_interval_s
        self._cmd_timeout = command_timeout_s
        self._read_timeout = read_timeout_s
        self._reconnect = reconnect_interval_s
        self._read_retries = read_retries
        self._serial_factory = serial_factory
        super().__init__(join_timeout_s=read_timeout_s + 2)
        self._parser = sam.ResponseParser()
        # Set after a card that could not be read: that card got its prompt, so the reader
        # leaves it alone until a find says it left the field (one presentation, one prompt).
        self._await_removal = False
        self.connected = False
        self.last_read_at: str | None = None
        self.reads = 0
        self.last_cycle_s: float | None = None  # find -> read complete, for the last card

    def health(self) -> dict[str, Any]:
        """What the heartbeat reports about the reader."""
        with self._lock:
            return {
                "url": self.url,
                "connected": self.connected,
                "last_read_at": self.last_read_at,
                "reads": self.reads,
                "last_cycle_ms": (
                    round(self.last_cycle_s * 1000, 1) if self.last_cycle_s is not None else None
                ),
                "errors": dict(self.errors),
            }

    # -- the loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        announced_down = False
        while not self._stop.is_set():
            try:
                port = self._serial_factory(self.url, baudrate=self._baudrate, timeout=0.05)
            except Exception as exc:  # SerialException, OSError, ValueError for a bad URL
                if not announced_down:
                    log.warning("reader %s not available: %s", self.url, exc)
                    self._event("reader_lost", error=str(exc))
                    announced_down = True
                self._count("open_failed")
                self._stop.wait(self._reconnect)
                continue
            try:
                self._session(port)
            except Exception as exc:
                # A vanished device surfaces as SerialException, OSError or termios.error
                # depending on where pyserial notices it: all of them mean "reopen".
                if not self._stop.is_set():
                    log.warning("reader %s lost: %s: %s", self.url, type(exc).__name__, exc)
                    self._count("disconnects")
                    self._event("reader_lost", error=f"{type(exc).__name__}: {exc}")
                    announced_down = True
            finally:
                with self._lock:
                    self.connected = False
                with contextlib.suppress(Exception):
                    port.close()
            self._stop.wait(self._reconnect)

    def _session(self, port: Any) -> None:
        """One connection: initialise the SAM, then poll until stopped or the port fails."""
        self._initialise(port)
        log.info("reader %s ready", self.url)
        with self._lock:
            self.connected = True
        self._event("reader_ready", url=self.url)
        while not self._stop.is_set():
            try:
                self._poll_once(port)
            except ReaderTimeout:
                self._count("timeout")
                if not self._alive(port):
                    return
            except ReaderError as exc:
                log.debug("reader: %s", exc)
            self._stop.wait(self._poll)
        raise _Stopped

    def _initialise(self, port: Any) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self._expect(port, sam.reset_command(), (sam.SW3_OK,), "reset")
                self._expect(port, sam.status_command(), (sam.SW3_OK,), "status")
                return
            except ReaderError as exc:
                self._count("init_failed")
                if not failing:  # log once per outage, not every retry
                    log.warning("reader %s initialisation failed: %s", self.url, exc)
                    self._event("reader_init_failed", error=str(exc))
                    failing = True
                self._stop.wait(self._reconnect)
        raise _Stopped

    def _alive(self, port: Any) -> bool:
        """After a timeout: does the SAM still answer a status request?"""
        try:
            self._expect(port, sam.status_command(), (sam.SW3_OK,), "status")
            return True
        except ReaderTimeout:
            log.warning("reader %s stopped answering; reconnecting", self.url)
            self._count("unresponsive")
            return False
        except ReaderError:
            return True

    def _poll_once(self, port: Any) -> None:
        """One find; on a card, select and read it; a card that cannot be read is still a tap.

        Once a card was found, every failure (a refused select or read, a reply that is
        truncated, noise or late, text that does not decode) ends in an unreadable-card
        credential, so the citizen hears "please tap again" instead of silence. A timeout is
        raised again afterwards: the caller then checks that the SAM still answers.
        """
        cycle_start = time.monotonic()
        found = self._transact(port, sam.find_card_command(), self._cmd_timeout)
        if found.sw3 != sam.SW3_FOUND:
            self._await_removal = False  # the field is empty (or the card was read)
            return
        if self._await_removal:
            return  # the same unreadable card, still in the field: it already had its prompt
        try:
            self._expect(port, sam.select_card_command(), (sam.SW3_OK,), "select")
            frame = self._read(port)
        except ReaderError as exc:
            self._unreadable(str(exc))
            if isinstance(exc, ReaderTimeout):
                raise
            return
        completed_at = time.monotonic()
        with self._lock:
            self.last_cycle_s = completed_at - cycle_start
        try:
            text, _photo, _finger = sam.parse_read_base(frame)
            card = idcard.decode_text(text)
        except (ProtocolError, ValueError) as exc:
            self._count("decode")
            self._unreadable(f"unreadable card text: {exc}")
            return
        # The photo stays in this frame object only; it is never stored or forwarded.
        self._emit(card, completed_at)

    def _read(self, port: Any) -> sam.Frame:
        """Read base data, retrying a refused or garbled reply; a timeout is not retried
        (each costs `read_timeout_s` of the citizen's wait)."""
        for attempt in range(self._read_retries):
            try:
                return self._expect(port, sam.read_base_command(), (sam.SW3_OK,), "read")
            except ReaderTimeout:
                raise
            except ReaderError as exc:
                log.info("read failed (%s), retry %d", exc, attempt + 1)
        return self._expect(port, sam.read_base_command(), (sam.SW3_OK,), "read")

    def _unreadable(self, why: str) -> None:
        """A card was presented but could not be read: the citizen still gets a prompt."""
        log.warning("card could not be read: %s", why)
        self._count("unreadable")
        self._await_removal = True
        self._event("card_unreadable", error=why)
        if self._on_credential is not None:
            self._on_credential(
                Credential(
                    kind="id_card",
                    id_number="",
                    completed_at=time.monotonic(),
                    readable=False,
                    checksum_ok=False,
                )
            )

    def _emit(self, card: dict[str, Any], completed_at: float) -> None:
        id_number = str(card.get("id_number") or "")
        checksum = card.get("id_checksum_ok")
        cred = Credential(
            kind="id_card",
            id_number=id_number,
            completed_at=completed_at,
            source="reader",
            card_type=str(card.get("card_type", "resident")),
            checksum_ok=checksum is not False and bool(id_number),
            valid_to=str(card.get("valid_to") or ""),
        )
        with self._lock:
            self.reads += 1
            self.last_read_at = dt.datetime.now(dt.UTC).isoformat()
        if self._on_credential is not None:
            self._on_credential(cred)

    # -- transactions ------------------------------------------------------------------------
    def _expect(self, port: Any, command: bytes, ok: tuple[int, ...], what: str) -> sam.Frame:
        timeout = self._read_timeout if what == "read" else self._cmd_timeout
        try:
            frame = self._transact(port, command, timeout)
        except ReaderTimeout as exc:
            raise ReaderTimeout(f"{what}: {exc}") from None
        except ReaderError as exc:
            raise ReaderError(f"{what}: {exc}") from None
        if frame.sw3 not in ok:
            self._count(f"status_{frame.sw3:02X}")
            raise ReaderStatus(what, frame.sw3)
        return frame

    def _transact(self, port: Any, command: bytes, timeout: float) -> sam.Frame:
        """Send one command and wait for its reply; a bad reply is counted and raised."""
        port.reset_input_buffer()  # stale bytes of an earlier, timed-out reply
        self._parser.reset()
        port.write(command)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReaderTimeout(f"no reply within {timeout:.2f} s")
            chunk = port.read(max(1, port.in_waiting))
            if not chunk:
                continue
            for item in self._parser.feed(chunk):
                if isinstance(item, ProtocolError):
                    self._count(type(item).__name__)
                    if type(item).__name__ == "SyncError":
                        continue  # line noise before the reply: the frame may still follow
                    raise ReaderError(f"bad reply frame: {item}")
                return item  # type: ignore[no-any-return]
