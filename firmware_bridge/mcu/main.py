"""The MCU firmware: SAM poller, bridge to the Pi, gate relay, indicators, watchdog.

``Firmware`` is testable: it takes port factories (``open_sam()`` / ``open_host()`` returning
``uart`` ports), pin objects, a clock and a watchdog. ``start()`` puts the relay in the safe
state (released) before anything else; ``step()`` is one cooperative loop iteration;
``run()`` loops forever. Nothing in a step blocks longer than ~20 ms: SAM replies are
collected as they arrive (``reader.SamPoller``), so the relay is released on time and Pi
commands are served during a 3 s read timeout.

Entry points: ``run_unix(argv)`` (``micropython -m firmware_bridge.mcu --sam SPEC --host
SPEC``) and ``run_board(...)`` (``main.py`` on a Pico; see ``docs/firmware.md``).
"""

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .. import bridge
from ..uart import open_uart
from . import hw
from .reader import SamPoller

FIRMWARE_VERSION = "siheyi-bridge 1.0.0"

DEFAULT_MAX_OPEN_MS = const(5000)
HEALTH_EVERY_MS = const(2000)
CARD_RETRY_MS = const(200)
CARD_RETRIES = const(3)  # resends after the first transmission
CARD_MAX_AGE_MS = const(3000)  # a tap older than this is stale for a gate decision
CARD_QUEUE = const(4)
HOST_REOPEN_MS = const(200)
IDLE_WAIT_MS = const(20)
WATCHDOG_MS = const(5000)

_HOST_CHUNK = const(512)


class _Outgoing:
    """A CARD awaiting its ACK: the frame bytes are kept so a resend is byte-identical."""

    __slots__ = ("born", "frame", "next_at", "sends", "seq")

    def __init__(self, seq, frame, born):
        self.seq = seq
        self.frame = frame
        self.born = born
        self.next_at = born
        self.sends = 0


class Firmware:
    """The bridge firmware's state and one-iteration ``step()``."""

    def __init__(
        self,
        open_sam,
        open_host,
        relay,
        green=None,
        red=None,
        buzzer=None,
        clock=None,
        watchdog=None,
        max_open_ms=DEFAULT_MAX_OPEN_MS,
        reset_cause=0,
        version=FIRMWARE_VERSION,
    ):
        self.relay = relay
        self.relay.value(0)  # safe state first: gate closed
        self.green = green
        self.red = red
        self.buzzer = buzzer
        self.clock = clock or hw.Clock()
        self.watchdog = watchdog
        self.max_open_ms = max_open_ms
        self.reset_cause = reset_cause
        self.version = version
        self._open_host = open_host
        self.host = None
        self.decoder = bridge.Decoder()
        self.peer = bridge.Peer()
        self.reader = SamPoller(open_sam, self.clock)
        now = self.clock.ticks_ms()
        self._last = now
        self.uptime_ms = 0
        self._host_due = now
        self._health_due = self.clock.add(now, HEALTH_EVERY_MS)
        self._relay_off_at = None  # ticks when the relay must be released
        self._relay_acks = {}  # seq -> granted_ms, for re-ACKing duplicates
        self._leds_off_at = None
        self._buzzer_off_at = None
        self._cards = []  # _Outgoing, oldest first; the head is on the wire
        self.stats = {
            "host_reopens": 0,
            "card_resends": 0,
            "cards_dropped": 0,
            "cards_acked": 0,
            "tx_dropped": 0,
        }
        self._hello_cause = reset_cause

    # ------------------------------------------------------------ host link

    def _send(self, msg_type, payload=b"", seq=None):
        if seq is None:
            seq = self.peer.next_seq()
        self._write(bridge.encode(msg_type, seq, payload))
        return seq

    def _write(self, frame):
        if self.host is None:
            self.stats["tx_dropped"] += 1
            return False
        try:
            n = self.host.write(frame)
        except OSError:
            self._host_lost()
            self.stats["tx_dropped"] += 1
            return False
        if n != len(frame):
            self.stats["tx_dropped"] += 1
            return False
        return True

    def log(self, level, text):
        """Send a LOG line to the Pi (dropped while the link is down)."""
        self._send(bridge.LOG, bridge.log_payload(level, text))

    def _host_lost(self):
        if self.host is not None:
            try:  # noqa: SIM105 (no contextlib on MicroPython)
                self.host.close()
            except OSError:
                pass
        self.host = None
        self._host_due = self.clock.add(self.clock.ticks_ms(), HOST_REOPEN_MS)

    def _service_host(self, now):
        if self.host is None:
            if self.clock.diff(now, self._host_due) < 0:
                return
            try:
                self.host = self._open_host()
            except OSError:
                self._host_due = self.clock.add(now, HOST_REOPEN_MS)
                return
            self.decoder.reset()
            self.peer.reset()
            self.stats["host_reopens"] += 1
            # Leading 00 ends any partial frame the Pi holds; HELLO resets its SEQ tracking.
            self._write(b"\x00")
            cause = self._hello_cause
            self._hello_cause = bridge.CAUSE_LINK  # later HELLOs: link reopened, no restart
            self._send(bridge.HELLO, bridge.hello_payload(cause, self.version))
            self._send_health(now)
        for _ in range(8):  # bounded: a flood of input cannot starve the rest of the loop
            if self.host is None:
                return
            try:
                data = self.host.read(_HOST_CHUNK)
            except OSError:
                self._host_lost()
                return
            if not data:
                return
            for item in self.decoder.feed(data):
                if isinstance(item, bridge.Message):
                    self._handle(item, now)

    def _handle(self, msg, now):
        t = msg.type
        if t == bridge.ACK:
            self._on_ack(msg)
            return
        verdict = self.peer.accept(msg)
        if t == bridge.PING:
            token = bridge.parse_ping(msg.payload) if len(msg.payload) >= 4 else 0
            self._send(bridge.PONG, bridge.pong_payload(token, self.uptime_ms, self.version))
            self._send_health(now)
        elif t == bridge.RELAY:
            self._on_relay(msg, verdict, now)
        elif t == bridge.INDICATE:
            self._on_indicate(msg, verdict, now)
        else:
            self._ack(msg.seq, bridge.STATUS_BAD_REQUEST)

    def _ack(self, seq, status, data=b""):
        self._send(bridge.ACK, bridge.ack_payload(seq, status, data))

    def _on_ack(self, msg):
        try:
            seq, _status, _data = bridge.parse_ack(msg.payload)
        except bridge.BridgeError:
            return
        if self._cards and self._cards[0].seq == seq:
            self._cards.pop(0)
            self.stats["cards_acked"] += 1

    def _on_relay(self, msg, verdict, now):
        try:
            want = bridge.parse_relay(msg.payload)
        except bridge.BridgeError:
            self._ack(msg.seq, bridge.STATUS_BAD_REQUEST)
            return
        if verdict == "duplicate" and msg.seq in self._relay_acks:
            granted = self._relay_acks[msg.seq]
            self._ack(msg.seq, bridge.STATUS_OK, bridge.relay_payload(granted))
            return
        granted = min(want, self.max_open_ms)
        self._relay_acks = {msg.seq: granted}  # only the last one can be repeated
        self._ack(msg.seq, bridge.STATUS_OK, bridge.relay_payload(granted))  # ACK first
        self.set_relay(granted, now)

    def set_relay(self, open_ms, now):
        """Open the relay for ``open_ms`` (clamped to the maximum), or release it (0)."""
        open_ms = min(open_ms, self.max_open_ms)
        if open_ms <= 0:
            self._relay_release("closed by command")
            return
        was = self.relay.value()
        self.relay.value(1)
        self._relay_off_at = self.clock.add(now, open_ms)
        self.log(bridge.INFO, f"relay on {open_ms} ms" if not was else "relay extended")

    def _relay_release(self, why):
        was = self.relay.value()
        self.relay.value(0)
        self._relay_off_at = None
        if was:
            self.log(bridge.INFO, "relay off (" + why + ")")

    def _on_indicate(self, msg, verdict, now):
        try:
            green, red, buzzer_ms, show_ms = bridge.parse_indicate(msg.payload)
        except bridge.BridgeError:
            self._ack(msg.seq, bridge.STATUS_BAD_REQUEST)
            return
        if verdict == "new":
            _set(self.green, green)
            _set(self.red, red)
            self._leds_off_at = self.clock.add(now, show_ms) if show_ms else None
            if buzzer_ms:
                _set(self.buzzer, 1)
                self._buzzer_off_at = self.clock.add(now, min(buzzer_ms, self.max_open_ms))
        self._ack(msg.seq, bridge.STATUS_OK)

    # ------------------------------------------------------------ timers

    def _service_timers(self, now):
        if self._relay_off_at is not None and self.clock.diff(now, self._relay_off_at) >= 0:
            self._relay_release("time up")
        if self._leds_off_at is not None and self.clock.diff(now, self._leds_off_at) >= 0:
            self._leds_off_at = None
            _set(self.green, 0)
            _set(self.red, 0)
        if self._buzzer_off_at is not None and self.clock.diff(now, self._buzzer_off_at) >= 0:
            self._buzzer_off_at = None
            _set(self.buzzer, 0)

    def _service_cards(self, now):
        while self._cards:
            head = self._cards[0]
            age = self.clock.diff(now, head.born)
            if head.sends > CARD_RETRIES or age > CARD_MAX_AGE_MS:
                self._cards.pop(0)
                self.stats["cards_dropped"] += 1
                self.log(bridge.WARNING, f"CARD seq {head.seq} not acknowledged, dropped")
                continue
            if self.clock.diff(now, head.next_at) < 0 or self.host is None:
                return
            if head.sends:
                self.stats["card_resends"] += 1
            if self._write(head.frame):
                head.sends += 1
            head.next_at = self.clock.add(now, CARD_RETRY_MS)
            return

    def _queue_card(self, card, cycle_ms, now):
        try:
            payload = bridge.card_payload(card, cycle_ms)
        except ValueError as err:
            self._send(
                bridge.CARD_ERROR, bridge.card_error_payload(bridge.STAGE_DECODE, 0, str(err))
            )
            return
        seq = self.peer.next_seq()
        if len(self._cards) >= CARD_QUEUE:
            self._cards.pop(1 if len(self._cards) > 1 else 0)
            self.stats["cards_dropped"] += 1
        self._cards.append(_Outgoing(seq, bridge.encode(bridge.CARD, seq, payload), now))

    def _service_reader(self, now):
        for event in self.reader.step(now):
            kind = event[0]
            if kind == "card":
                self._queue_card(event[1], event[2], now)
            elif kind == "error":
                payload = bridge.card_error_payload(event[1], event[2], event[3])
                self._send(bridge.CARD_ERROR, payload)
            else:
                self.log(event[1], event[2])

    # ------------------------------------------------------------ health

    def health(self, now):
        """The HEALTH document (see docs/bridge.md)."""
        dec = self.decoder
        return {
            "reader": self.reader.health(now),
            "bridge": {
                "bad_frames": dec.bad_frames,
                "oversized": dec.oversized,
                "frames": dec.frames,
                "lost": self.peer.lost,
                "duplicates": self.peer.duplicates,
                "host_reopens": self.stats["host_reopens"],
                "card_resends": self.stats["card_resends"],
                "cards_dropped": self.stats["cards_dropped"],
                "tx_dropped": self.stats["tx_dropped"],
            },
            "relay_open": bool(self.relay.value()),
            "uptime_ms": self.uptime_ms,
        }

    def _send_health(self, now):
        self._health_due = self.clock.add(now, HEALTH_EVERY_MS)
        self._send(bridge.HEALTH, bridge.health_payload(self.health(now)))

    # ------------------------------------------------------------ loop

    def start(self):
        """Safe state (relay released) and the first port openings; sends HELLO."""
        self.relay.value(0)
        _set(self.green, 0)
        _set(self.red, 0)
        _set(self.buzzer, 0)
        self.step(wait=False)

    def step(self, wait=True):
        """One loop iteration; with ``wait`` it sleeps at most ~20 ms for host input."""
        clock = self.clock
        now = clock.ticks_ms()
        self.uptime_ms += max(0, clock.diff(now, self._last))
        self._last = now
        if self.watchdog is not None:
            self.watchdog.feed()
        self._service_timers(now)
        self._service_host(now)
        self._service_timers(now)  # a RELAY 0 just served, or a release that came due
        self._service_reader(now)
        self._service_cards(now)
        if self.clock.diff(now, self._health_due) >= 0:
            self._send_health(now)
        if wait:
            self._wait(now)

    def _wait(self, now):
        timeout = min(IDLE_WAIT_MS, self.reader.ms_to_next(now))
        for due in (self._relay_off_at, self._leds_off_at, self._buzzer_off_at):
            if due is not None:
                timeout = min(timeout, max(0, self.clock.diff(due, now)))
        if self._cards:
            timeout = min(timeout, max(0, self.clock.diff(self._cards[0].next_at, now)))
        if timeout <= 0:
            return
        if self.host is None:
            self.clock.sleep_ms(timeout)
            return
        try:
            self.host.wait(timeout)
        except OSError:
            self._host_lost()

    def run(self):
        """Loop forever (the watchdog resets the board if this ever stalls)."""
        self.start()
        while True:
            self.step()

    def close(self):
        """Release the relay and close both ports (tests, unix shutdown)."""
        self.relay.value(0)
        self.reader.close()
        if self.host is not None:
            try:  # noqa: SIM105 (no contextlib on MicroPython)
                self.host.close()
            except OSError:
                pass
            self.host = None


def _set(pin, value):
    if pin is not None:
        pin.value(1 if value else 0)


# ---------------------------------------------------------------- entry points

USAGE = "usage: micropython -m firmware_bridge.mcu --sam SPEC --host SPEC [--max-open-ms MS]"


def parse_args(argv):
    """``--sam SPEC --host SPEC [--max-open-ms MS] [--baud N]`` -> dict (no argparse on boards)."""
    opts = {"sam": None, "host": None, "max_open_ms": DEFAULT_MAX_OPEN_MS, "baud": 115200}
    i = 0
    while i < len(argv):
        arg = argv[i]
        value = None
        if "=" in arg:
            arg, value = arg.split("=", 1)
        key = arg[2:].replace("-", "_") if arg[:2] == "--" else None
        if key not in opts:
            raise ValueError(f"unknown argument {argv[i]!r}")
        if value is None:
            i += 1
            if i >= len(argv):
                raise ValueError(arg + " needs a value")
            value = argv[i]
        if key == "max_open_ms" or key == "baud":
            value = int(value)
            if value < 0 or (key == "max_open_ms" and value > 0xFFFF):
                raise ValueError(arg + " out of range")
        opts[key] = value
        i += 1
    if not opts["sam"] or not opts["host"]:
        raise ValueError("--sam and --host are required")
    return opts


def run_unix(argv):
    """Unix port / CPython: simulated pins and watchdog, tty/pty or pyserial ports."""
    import sys

    try:
        opts = parse_args(argv)
    except ValueError as err:
        sys.stderr.write(str(err) + "\n" + USAGE + "\n")
        return 2
    baud = opts["baud"]
    fw = Firmware(
        lambda: open_uart(opts["sam"], baud),
        lambda: open_uart(opts["host"], 115200),
        hw.output_pin(None, "relay"),
        hw.output_pin(None, "green"),
        hw.output_pin(None, "red"),
        hw.output_pin(None, "buzzer"),
        watchdog=hw.watchdog(WATCHDOG_MS),
        max_open_ms=opts["max_open_ms"],
        reset_cause=hw.reset_cause(),
    )
    try:
        fw.run()
    except KeyboardInterrupt:
        pass
    finally:
        fw.close()
    return 0


def run_board(
    relay_pin,
    sam="uart:0:tx=0:rx=1",
    host="usb",
    green_pin=None,
    red_pin=None,
    buzzer_pin=None,
    relay_active_low=False,
    max_open_ms=DEFAULT_MAX_OPEN_MS,
    baud=115200,
):
    """A board's ``main.py``: relay released first, then the watchdog, then the loop."""
    relay = hw.output_pin(relay_pin, "relay", relay_active_low)  # safe state before all else
    fw = Firmware(
        lambda: open_uart(sam, baud),
        lambda: open_uart(host, 115200),
        relay,
        hw.output_pin(green_pin, "green"),
        hw.output_pin(red_pin, "red"),
        hw.output_pin(buzzer_pin, "buzzer"),
        watchdog=hw.watchdog(WATCHDOG_MS),
        max_open_ms=max_open_ms,
        reset_cause=hw.reset_cause(),
    )
    fw.run()
