"""Non-blocking SAM poller: a state machine advanced by ``step(now)`` from the main loop.

Sequence (``shared/protocols/idcard-sam.md``): reset 10 FF -> status 11 FF -> loop { find
20 01 every ~100 ms until SW3 9F; select 20 02; read 30 01 }. One command is in flight at a
time; ``step`` only reads what the port already holds, so a 3 s read timeout never blocks the
loop (the relay release and the Pi's commands keep running). After a successful read the SAM
itself answers find with 80 until the card leaves: one card event per presence. A card that
was found but could not be read (select or read refused, a garbled, truncated or late reply,
text that does not decode) gives one ``error`` event, and the poller then leaves it alone
until find stops seeing a card: one event per presence for those too.

Events are returned from ``step`` as tuples: ``("card", card_dict, cycle_ms)``,
``("error", stage, sw3, detail)`` and ``("log", level, text)``.
"""

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .. import bridge, sam
from ..errors import ProtocolError
from ..idcard import decode_text

S_CLOSED = const(0)  # port not open; reopen every REOPEN_MS
S_RESET = const(1)  # reset sent
S_STATUS = const(2)  # status sent
S_IDLE = const(3)  # waiting for the next find
S_FIND = const(4)
S_SELECT = const(5)
S_READ = const(6)
S_BACKOFF = const(7)  # init failed: wait, then reset again

STATE_NAMES = ("closed", "reset", "status", "idle", "find", "select", "read", "backoff")

REOPEN_MS = const(200)
FIND_EVERY_MS = const(100)
INIT_TIMEOUT_MS = const(500)
FIND_TIMEOUT_MS = const(200)
SELECT_TIMEOUT_MS = const(200)
READ_TIMEOUT_MS = const(3000)  # 1295 bytes take 112 ms at 115200, 1.35 s at 9600
BACKOFF_MS = const(500)
MAX_TIMEOUTS = const(3)  # consecutive timeouts before the reader counts as disconnected

_READ_CHUNK = const(2400)


class SamPoller:
    """Drives one SAM reader through a port factory (``open_port() -> uart``)."""

    def __init__(self, open_port, clock):
        self._open_port = open_port
        self.clock = clock
        self.port = None
        self.parser = sam.ResponseParser()
        self.state = S_CLOSED
        self._due = clock.ticks_ms()  # next action (reopen, find, backoff end)
        self._deadline = 0  # reply timeout of the command in flight
        self._cycle_start = 0
        self._timeouts = 0  # consecutive
        self.await_removal = False  # an unreadable card was reported; skip it until it leaves
        self.connected = False
        self.last_read = None  # ticks of the last successful read
        self.reads = 0
        self.errors = {}

    # ------------------------------------------------------------ helpers

    def _count(self, key):
        self.errors[key] = self.errors.get(key, 0) + 1

    def _send(self, frame, state, timeout_ms, now):
        self.parser.reset()  # a late reply to an abandoned command must not match this one
        try:
            # Drop stale bytes still waiting in the port (a late reply), then send.
            while self.port.read(_READ_CHUNK):
                pass
            self.port.write(frame)
        except OSError as err:
            return self._lost(now, err)
        self.state = state
        self._deadline = self.clock.add(now, timeout_ms)
        return []

    def _lost(self, now, err):
        self._count("port_lost")
        self._close()
        self._due = self.clock.add(now, REOPEN_MS)
        return [("log", bridge.WARNING, "SAM port lost: " + str(err))]

    def _close(self):
        if self.port is not None:
            try:  # noqa: SIM105 (no contextlib on MicroPython)
                self.port.close()
            except OSError:
                pass
        self.port = None
        self.state = S_CLOSED
        self.connected = False

    def _idle(self, now, delay=FIND_EVERY_MS):
        self.state = S_IDLE
        self._due = self.clock.add(self._cycle_start, delay)
        if self.clock.diff(self._due, now) < 0:
            self._due = now

    def close(self):
        """Close the port (the main loop's shutdown)."""
        self._close()

    @property
    def state_name(self):
        return STATE_NAMES[self.state]

    def busy(self):
        """True while a command is in flight (the main loop then polls more often)."""
        return S_RESET <= self.state <= S_READ and self.state != S_IDLE

    def ms_to_next(self, now):
        """Milliseconds until ``step`` has something to do without new input."""
        if self.busy():
            return 2
        return max(0, self.clock.diff(self._due, now))

    # ------------------------------------------------------------ the machine

    def step(self, now):
        """Advance the state machine; return the list of events it produced."""
        if self.state == S_CLOSED:
            if self.clock.diff(now, self._due) < 0:
                return []
            try:
                self.port = self._open_port()
            except OSError:
                self._due = self.clock.add(now, REOPEN_MS)
                return []
            self.parser.reset()
            self._timeouts = 0
            events = [("log", bridge.INFO, "SAM port open")]
            events.extend(self._start_init(now))  # no [*x] unpacking on MicroPython
            return events
        if self.state == S_BACKOFF or self.state == S_IDLE:
            if self.clock.diff(now, self._due) < 0:
                return []
            if self.state == S_BACKOFF:
                return self._start_init(now)
            self._cycle_start = now
            return self._send(sam.find_card_command(), S_FIND, FIND_TIMEOUT_MS, now)
        # A command is in flight: collect its reply.
        try:
            data = self.port.read(_READ_CHUNK)
        except OSError as err:
            return self._lost(now, err)
        events = []
        if data:
            for item in self.parser.feed(data):
                if isinstance(item, ProtocolError):
                    self._count(item.code)
                    if item.code != "garbage":
                        events.extend(self._bad_frame(now, item.code))
                        return events
                    continue
                events.extend(self._reply(item, now))
                return events  # one command, one reply
        if self.clock.diff(now, self._deadline) >= 0:
            events.extend(self._timeout(now))
        return events

    def _start_init(self, now):
        self._cycle_start = now
        return self._send(sam.reset_command(), S_RESET, INIT_TIMEOUT_MS, now)

    def _reply(self, frame, now):
        self._timeouts = 0
        state = self.state
        if state == S_RESET:
            if frame.sw3 != sam.SW3_OK:
                return self._init_failed(now, frame.sw3, "reset")
            return self._send(sam.status_command(), S_STATUS, INIT_TIMEOUT_MS, now)
        if state == S_STATUS:
            if frame.sw3 != sam.SW3_OK:
                return self._init_failed(now, frame.sw3, "status")
            self.connected = True
            self._cycle_start = now
            self._idle(now, 0)
            return [("log", bridge.INFO, "SAM ready")]
        if state == S_FIND:
            if frame.sw3 == sam.SW3_FOUND and not self.await_removal:
                return self._send(sam.select_card_command(), S_SELECT, SELECT_TIMEOUT_MS, now)
            if frame.sw3 != sam.SW3_FOUND:
                self.await_removal = False  # the field is empty (or the card was read)
            if frame.sw3 != sam.SW3_NO_CARD and frame.sw3 != sam.SW3_FOUND:
                self._count("status")
            self._idle(now)
            return []
        if state == S_SELECT:
            if frame.sw3 != sam.SW3_OK:
                return self._failed(now, bridge.STAGE_SELECT, frame.sw3, "select failed")
            return self._send(sam.read_base_command(), S_READ, READ_TIMEOUT_MS, now)
        if state == S_READ:
            if frame.sw3 != sam.SW3_OK:
                return self._failed(now, bridge.STAGE_READ, frame.sw3, "read failed")
            return self._card(frame, now)
        return []

    def _card(self, frame, now):
        cycle = self.clock.diff(now, self._cycle_start)
        self._idle(now)
        try:
            text, _photo, _finger = sam.parse_read_base(frame)
            card = decode_text(text)
        except ProtocolError as err:
            self._count("decode")
            self.await_removal = True
            return [("error", bridge.STAGE_DECODE, frame.sw3, str(err))]
        self.reads += 1
        self.last_read = now
        return [("card", card, cycle)]

    def _bad_frame(self, now, code):
        # A reply with a bad checksum / length: the command failed, the reader did not.
        state = self.state
        if state in (S_RESET, S_STATUS):
            return self._init_failed(now, 0, "bad reply frame (" + code + ")")
        if state in (S_SELECT, S_READ):
            stage = bridge.STAGE_SELECT if state == S_SELECT else bridge.STAGE_READ
            self._idle(now)
            self.await_removal = True
            return [("error", stage, 0, "bad reply frame (" + code + ")")]
        self._idle(now)
        return []

    def _failed(self, now, stage, sw3, detail):
        self._count("status")
        self._idle(now)
        self.await_removal = True  # select and read failures: the card was found
        return [("error", stage, sw3, detail + ": " + sam.status_text(sw3))]

    def _init_failed(self, now, sw3, what):
        self._count("init")
        self.connected = False
        self.state = S_BACKOFF
        self._due = self.clock.add(now, BACKOFF_MS)
        detail = f"SAM {what} failed (SW3 {sw3:02X})" if sw3 else "SAM " + what
        return [("error", bridge.STAGE_INIT, sw3, detail)]

    def _timeout(self, now):
        self._count("timeout")
        self._timeouts += 1
        state = self.state
        events = []
        if state in (S_SELECT, S_READ):
            name = "select" if state == S_SELECT else "read"
            self.await_removal = True
            events.append(("error", bridge.STAGE_TIMEOUT, 0, name + " timed out"))
        if state in (S_RESET, S_STATUS) or self._timeouts >= MAX_TIMEOUTS:
            if self.connected:
                events.append(("log", bridge.WARNING, "SAM not answering"))
            self.connected = False
            self.state = S_BACKOFF
            self._due = self.clock.add(now, BACKOFF_MS)
            return events
        self._idle(now)
        return events

    def health(self, now):
        """Reader part of HEALTH: connected, last successful read, error counts."""
        ago = None
        if self.last_read is not None:
            ago = self.clock.diff(now, self.last_read)
        errors = {}
        for key in self.errors:
            errors[key] = self.errors[key]
        return {
            "connected": self.connected,
            "last_read_ms_ago": ago,
            "errors": errors,
            "reads": self.reads,
            "state": self.state_name,
        }
