"""Reader behind a microcontroller: the Pi's end of the MCU bridge (docs/bridge.md).

In this wiring the MCU polls the SAM module and drives the gate relay; the Pi receives parsed
card events and sends relay and indicator commands. `McuLink` is a credential source with the
same shape as `CardReader` (start/stop/health, credentials and events through callbacks) so
the agent does not care which wiring a kiosk has, and `McuGate` gives the gate actions the
same shape as `device.acting.gate.Gate` but executes them on the MCU, which also enforces the
maximum open time if the Pi dies.

The link runs on its own thread (pyserial is blocking). A link that goes quiet for
`link_timeout_s` or whose port disappears is closed and reopened.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import serial

from device.errors import GateError
from device.sources.credentials import Credential
from device.sources.threaded import ThreadedSource
from firmware_bridge import bridge
from firmware_bridge.errors import ProtocolError

log = logging.getLogger(__name__)

_LOG_LEVELS = {10: logging.DEBUG, 20: logging.INFO, 30: logging.WARNING, 40: logging.ERROR}

# CARD_ERROR stages that follow a successful find (STAGE_TIMEOUT: select or read timed out).
_CARD_FOUND_STAGES = frozenset(
    (bridge.STAGE_SELECT, bridge.STAGE_READ, bridge.STAGE_DECODE, bridge.STAGE_TIMEOUT)
)


class McuLink(ThreadedSource):
    """Host side of the bridge: PING cadence, ACKs, SEQ tracking, reconnects."""

    thread_name = "mcu-link"

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 115200,
        ping_interval_s: float = 1.0,
        link_timeout_s: float = 2.0,
        reconnect_interval_s: float = 0.2,
        serial_factory: Callable[..., Any] = serial.serial_for_url,
    ) -> None:
        self.url = url
        self._baudrate = baudrate
        self._ping_interval = ping_interval_s
        self._link_timeout = link_timeout_s
        self._reconnect = reconnect_interval_s
        self._serial_factory = serial_factory
        super().__init__(join_timeout_s=3.0)
        # (expiry, frame): a command that could not be sent in time is dropped, never
        # executed late (a relay command from before an outage must not open the gate).
        self._outbox: queue.Queue[tuple[float, bytes]] = queue.Queue(maxsize=64)
        self._peer = bridge.Peer()
        self._recent_cards: deque[tuple[int, bytes]] = deque(maxlen=8)
        self._acks: dict[int, tuple[int, bytes]] = {}
        self._ack_cond = threading.Condition(self._lock)
        self.link_up = False
        self.mcu_version = ""
        self.mcu_uptime_ms: int | None = None
        self.mcu_health: dict[str, Any] = {}
        self.last_read_at: str | None = None
        self.reads = 0

    @property
    def connected(self) -> bool:
        """The MCU answers and reports its SAM reader as connected."""
        with self._lock:
            reader = self.mcu_health.get("reader")
            reader_ok = bool(reader.get("connected")) if isinstance(reader, dict) else False
            return self.link_up and reader_ok

    def health(self) -> dict[str, Any]:
        with self._lock:
            reader = self.mcu_health.get("reader")
            return {
                "url": self.url,
                "wiring": "mcu",
                "connected": self.link_up
                and isinstance(reader, dict)
                and bool(reader.get("connected")),
                "link_up": self.link_up,
                "mcu_version": self.mcu_version,
                "mcu_uptime_ms": self.mcu_uptime_ms,
                "mcu": dict(self.mcu_health),
                "last_read_at": self.last_read_at,
                "reads": self.reads,
                "errors": dict(self.errors),
            }

    # -- commands (any thread) ---------------------------------------------------------------
    def send(self, msg_type: int, payload: bytes = b"", *, valid_s: float = 0.5) -> int:
        """Queue a command for the MCU; returns its SEQ (to wait for the ACK)."""
        with self._lock:
            seq = int(self._peer.next_seq())
        frame = bytes(bridge.encode(msg_type, seq, payload))
        try:
            self._outbox.put_nowait((time.monotonic() + valid_s, frame))
        except queue.Full as exc:
            raise GateError("MCU command queue full (link down?)") from exc
        return seq

    def wait_ack(self, seq: int, timeout_s: float) -> tuple[int, bytes] | None:
        """The (status, data) of the ACK for `seq`, or None after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._ack_cond:
            while seq not in self._acks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._ack_cond.wait(remaining)
            return self._acks.pop(seq)

    # -- the thread --------------------------------------------------------------------------
    def _set_link(self, up: bool, **detail: Any) -> None:
        with self._lock:
            was = self.link_up
            self.link_up = up
        if up and not was:
            log.info("MCU link %s up", self.url)
            self._event("reader_ready", url=self.url, wiring="mcu")
        elif was and not up:
            log.warning("MCU link %s down: %s", self.url, detail.get("error", ""))
            self._event("reader_lost", **detail)

    def _run(self) -> None:
        announced = False
        while not self._stop.is_set():
            try:
                port = self._serial_factory(self.url, baudrate=self._baudrate, timeout=0.05)
            except Exception as exc:
                if not announced:
                    log.warning("MCU link %s not available: %s", self.url, exc)
                    self._event("reader_lost", error=str(exc))
                    announced = True
                self._count("open_failed")
                self._stop.wait(self._reconnect)
                continue
            announced = False
            try:
                self._session(port)
            except Exception as exc:  # vanished port: SerialException, OSError, termios.error
                if not self._stop.is_set():
                    self._count("disconnects")
                    self._set_link(False, error=f"{type(exc).__name__}: {exc}")
                    announced = True
            finally:
                self._set_link(False, error="closed")
                try:
                    port.close()
                except Exception:
                    log.debug("closing MCU port failed", exc_info=True)
            self._stop.wait(self._reconnect)

    def _session(self, port: Any) -> None:
        decoder = bridge.Decoder()
        last_ping = 0.0
        last_heard = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_ping >= self._ping_interval:
                last_ping = now
                with self._lock:
                    seq = self._peer.next_seq()
                port.write(bridge.encode(bridge.PING, seq, os.urandom(4)))
            while True:
                try:
                    expiry, frame = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if time.monotonic() <= expiry:
                    port.write(frame)
                else:
                    self._count("commands_expired")
            chunk = port.read(max(1, port.in_waiting))
            if chunk:
                for item in decoder.feed(chunk):
                    if isinstance(item, ProtocolError):
                        self._count(f"bridge_{getattr(item, 'code', type(item).__name__)}")
                        continue
                    last_heard = time.monotonic()
                    self._set_link(True)
                    self._handle(port, item)
            if time.monotonic() - last_heard > self._link_timeout:
                self._count("link_timeout")
                raise TimeoutError(f"no valid frame from the MCU for {self._link_timeout:.1f} s")

    def _handle(self, port: Any, msg: Any) -> None:
        kind = msg.type
        if kind == bridge.HELLO:
            with self._lock:
                self._peer.reset()
            self._peer.accept(msg)
            log.info("MCU (re)started: %s", bytes(msg.payload[1:]).decode("utf-8", "replace"))
            return
        if kind == bridge.CARD:
            port.write(self._ack(msg.seq))
            fresh = self._peer.accept(msg) == "new"
            key = (msg.seq, bytes(msg.payload))
            if fresh and key not in self._recent_cards:
                # A retransmission that arrives after other traffic looks "new" to the
                # sequence check: the recent (SEQ, payload) pairs catch it.
                self._recent_cards.append(key)
                self._card(msg)
            return
        if kind == bridge.CARD_ERROR:
            port.write(self._ack(msg.seq))
            if self._peer.accept(msg) == "new":
                self._card_error(msg)
            return
        self._peer.accept(msg)
        if kind == bridge.PONG:
            pong = bridge.parse_pong(msg.payload)
            with self._lock:
                self.mcu_uptime_ms = pong["uptime_ms"]
                self.mcu_version = pong["version"]
        elif kind == bridge.HEALTH:
            health = bridge.parse_health(msg.payload)
            with self._lock:
                was_ok = self._reader_ok_locked()
                self.mcu_health = health if isinstance(health, dict) else {}
                now_ok = self._reader_ok_locked()
            if was_ok and not now_ok:
                self._event("reader_lost", error="the MCU reports its SAM reader down")
            elif now_ok and not was_ok:
                self._event("reader_ready", url=self.url, wiring="mcu")
        elif kind == bridge.LOG:
            level, text = bridge.parse_log(msg.payload)
            log.log(_LOG_LEVELS.get(level, logging.INFO), "MCU: %s", text)
        elif kind == bridge.ACK:
            acked, status, data = bridge.parse_ack(msg.payload)
            with self._ack_cond:
                self._acks[acked] = (status, bytes(data))
                if len(self._acks) > 64:
                    self._acks.pop(next(iter(self._acks)))
                self._ack_cond.notify_all()

    def _ack(self, acked: int) -> bytes:
        with self._lock:
            seq = self._peer.next_seq()
        return bytes(bridge.encode(bridge.ACK, seq, bridge.ack_payload(acked, bridge.STATUS_OK)))

    def _reader_ok_locked(self) -> bool:
        reader = self.mcu_health.get("reader")
        return isinstance(reader, dict) and bool(reader.get("connected"))

    def _card(self, msg: Any) -> None:
        completed_at = time.monotonic()
        try:
            card = bridge.parse_card(msg.payload)
        except (ProtocolError, ValueError) as exc:
            self._count("card_payload")
            self._unreadable(f"bad CARD payload: {exc}")
            return
        id_number = str(card.get("id_number") or "")
        with self._lock:
            self.reads += 1
            self.last_read_at = dt.datetime.now(dt.UTC).isoformat()
        if self._on_credential is not None:
            self._on_credential(
                Credential(
                    kind="id_card",
                    id_number=id_number,
                    completed_at=completed_at,
                    source="mcu",
                    card_type=str(card.get("card_type", "resident")),
                    checksum_ok=card.get("id_checksum_ok") is not False and bool(id_number),
                    valid_to=str(card.get("valid_to") or ""),
                )
            )

    def _card_error(self, msg: Any) -> None:
        """A card the MCU found but could not read is a tap: it gets the unreadable prompt.

        Select, read and decode failures and a select or read timeout (a reply that was
        truncated, noise or late) all come after a find succeeded; the MCU reports each
        presented card once (it leaves the card alone until it is removed).
        """
        stage, sw3, detail = bridge.parse_card_error(msg.payload)
        self._count(f"card_error_stage_{stage}")
        if stage in _CARD_FOUND_STAGES:
            self._unreadable(f"MCU stage {stage} SW3 {sw3:02X}: {detail}")

    def _unreadable(self, why: str) -> None:
        log.warning("card could not be read: %s", why)
        self._count("unreadable")
        self._event("card_unreadable", error=why)
        if self._on_credential is not None:
            self._on_credential(
                Credential(
                    kind="id_card",
                    id_number="",
                    completed_at=time.monotonic(),
                    source="mcu",
                    readable=False,
                    checksum_ok=False,
                )
            )


class McuGate:
    """Gate actions executed by the MCU (relay with its own maximum open time, lights)."""

    def __init__(
        self,
        link: McuLink,
        *,
        relay_pulse_s: float = 3.0,
        show_s: float = 2.0,
        beep_ms: int = 450,
    ) -> None:
        self._link = link
        self._pulse_ms = int(relay_pulse_s * 1000)
        self._show_ms = int(show_s * 1000)
        self._beep_ms = beep_ms
        self.last_relay_seq: int | None = None

    def open_pulse(self) -> None:
        self.last_relay_seq = self._link.send(bridge.RELAY, bridge.relay_payload(self._pulse_ms))

    def show(self, outcome: str) -> None:
        green = outcome == "pass"
        self._link.send(
            bridge.INDICATE, bridge.indicate_payload(green, not green, 0, self._show_ms)
        )

    def fault(self) -> None:
        self._link.send(
            bridge.INDICATE, bridge.indicate_payload(False, True, self._beep_ms, self._show_ms)
        )

    def safe_state(self) -> None:
        try:
            self._link.send(bridge.RELAY, bridge.relay_payload(0))
        except GateError:
            log.warning("could not queue relay release; the MCU releases it on its own")

    def close(self) -> None:
        self.safe_state()
