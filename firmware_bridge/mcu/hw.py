"""Hardware edges of the firmware: clock, pins, watchdog, reset cause (by feature test).

On a board ``machine.Pin`` / ``machine.WDT`` are used; on the unix port and CPython,
``SimPin`` records every state change (like gpiozero's mock pins) and ``SimWatchdog`` records
feeds and reports a missed deadline instead of resetting.
"""

try:
    import machine

    _BOARD = hasattr(machine, "Pin") and hasattr(machine, "WDT")
except ImportError:
    machine = None
    _BOARD = False

try:
    from time import sleep_ms, ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython
    import time as _time

    _T0 = _time.monotonic()

    def ticks_ms():
        return int((_time.monotonic() - _T0) * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b

    def sleep_ms(ms):
        _time.sleep(ms / 1000)


class Clock:
    """Millisecond ticks (wrapping on MicroPython; use ``diff``), and a sleep."""

    def ticks_ms(self):
        return ticks_ms()

    def diff(self, a, b):
        """a - b in ms, correct across the tick counter's wrap."""
        return ticks_diff(a, b)

    def add(self, a, ms):
        return ticks_add(a, ms)

    def sleep_ms(self, ms):
        if ms > 0:
            sleep_ms(ms)


class SimPin:
    """An output pin that records its states: ``value()``, ``value(v)``, ``on()``, ``off()``."""

    def __init__(self, name="pin", value=0):
        self.name = name
        self._value = 1 if value else 0
        self.history = [self._value]  # every state set, in order (repeats included)

    def value(self, v=None):
        if v is None:
            return self._value
        self._value = 1 if v else 0
        self.history.append(self._value)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class SimWatchdog:
    """Stands in for ``machine.WDT``: counts feeds and the longest gap between two feeds."""

    def __init__(self, timeout_ms=5000, clock=None):
        self.timeout_ms = timeout_ms
        self.clock = clock or Clock()
        self.feeds = 0
        self.longest_gap_ms = 0
        self._last = self.clock.ticks_ms()

    def feed(self):
        now = self.clock.ticks_ms()
        gap = self.clock.diff(now, self._last)
        if gap > self.longest_gap_ms:
            self.longest_gap_ms = gap
        self._last = now
        self.feeds += 1

    @property
    def expired(self):
        """True when a real watchdog would have reset the board by now."""
        return self.clock.diff(self.clock.ticks_ms(), self._last) > self.timeout_ms


def output_pin(number, name, active_low=False):
    """An output pin in its inactive state: ``machine.Pin`` on a board, else ``SimPin``."""
    if _BOARD and number is not None:
        pin = machine.Pin(number, machine.Pin.OUT, value=1 if active_low else 0)
        if active_low:
            return _Inverted(pin)
        return pin
    return SimPin(name)


class _Inverted:
    """An active-low output seen as active-high."""

    def __init__(self, pin):
        self._pin = pin

    def value(self, v=None):
        if v is None:
            return 1 - self._pin.value()
        self._pin.value(0 if v else 1)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


def watchdog(timeout_ms=5000):
    """``machine.WDT`` on a board (cannot be stopped once started), else ``SimWatchdog``."""
    if _BOARD:
        return machine.WDT(timeout=timeout_ms)
    return SimWatchdog(timeout_ms)


def reset_cause():
    """``machine.reset_cause()`` on a board (0..15), else 0 (power-on / unknown)."""
    if machine is not None and hasattr(machine, "reset_cause"):
        try:
            return machine.reset_cause() & 0x0F
        except Exception:
            return 0
    return 0
