"""The gate: door relay, green and red lights and a buzzer, over gpiozero.

Every action is non-blocking (gpiozero's background blink threads time the pulse), because
the caller is the tap handler on the event loop and the door must open while the prompt is
still being spoken. Pins come from configuration; ``pin_factory`` is keyword-only as on
every gpiozero device, so tests pass gpiozero's ``MockFactory`` and assert pin histories.

Safety: the relay is created switched off, every error path and :meth:`Gate.close` return
to :meth:`Gate.safe_state` (door locked, lights off), and only :meth:`Gate.open_pulse` ever
energises the relay, always for a bounded time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from gpiozero import LED, Buzzer, DigitalOutputDevice, GPIOZeroError

from device.errors import GateError

__all__ = ["PASS_OUTCOME", "Gate"]

log = logging.getLogger(__name__)

#: The only outcome that lights green (DESIGN.md: the gate opens only on pass).
PASS_OUTCOME = "pass"


class Gate:
    """Relay, lights and buzzer of one gate.

    ``active_high`` is the relay board's polarity (many opto-isolated relay boards switch
    on a low level); the LEDs and buzzer are wired active-high. ``relay_pulse_s`` is how
    long a pass keeps the door open, ``show_s`` how long a decision stays lit, and the
    buzzer beeps ``beeps`` times for a fault.
    """

    def __init__(
        self,
        relay_pin: int | str,
        green_led_pin: int | str,
        red_led_pin: int | str,
        buzzer_pin: int | str,
        *,
        relay_pulse_s: float = 3.0,
        show_s: float = 2.0,
        beep_s: float = 0.15,
        beeps: int = 3,
        active_high: bool = True,
        pin_factory: Any = None,
    ) -> None:
        if relay_pulse_s <= 0 or show_s <= 0 or beep_s <= 0 or beeps < 1:
            raise ValueError("relay_pulse_s, show_s and beep_s must be > 0 and beeps >= 1")
        self.relay_pulse_s = relay_pulse_s
        self.show_s = show_s
        self.beep_s = beep_s
        self.beeps = beeps
        self._lock = threading.Lock()
        self._closed = False
        opened: list[DigitalOutputDevice] = []
        try:
            self.relay = DigitalOutputDevice(
                relay_pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
            )
            opened.append(self.relay)
            self.green = LED(green_led_pin, initial_value=False, pin_factory=pin_factory)
            opened.append(self.green)
            self.red = LED(red_led_pin, initial_value=False, pin_factory=pin_factory)
            opened.append(self.red)
            self.buzzer = Buzzer(buzzer_pin, initial_value=False, pin_factory=pin_factory)
            opened.append(self.buzzer)
        except (GPIOZeroError, OSError, ValueError) as exc:
            for device in reversed(opened):
                device.close()
            raise GateError(f"cannot set up gate GPIO: {type(exc).__name__}: {exc}") from exc

    @property
    def is_open(self) -> bool:
        """Whether the relay is energised (door unlocked) right now."""
        return bool(self.relay.value)

    def open_pulse(self) -> None:
        """Unlock the door for ``relay_pulse_s``; returns at once.

        A pass while the door is still open restarts the pulse from now without releasing
        the relay in between (the next person is not shut out mid-step).
        """
        self._drive(
            "open the door",
            lambda: self.relay.blink(on_time=self.relay_pulse_s, off_time=0, n=1, background=True),
        )

    def show(self, outcome: str) -> None:
        """Light green for a pass, red for any other outcome, for ``show_s``; returns at once."""
        on, off = (self.green, self.red) if outcome == PASS_OUTCOME else (self.red, self.green)

        def light() -> None:
            off.off()
            on.blink(on_time=self.show_s, off_time=0, n=1, background=True)

        self._drive(f"show {outcome!r}", light)

    def fault(self) -> None:
        """Beep the buzzer ``beeps`` times and light red: a device fault needs staff."""

        def alarm() -> None:
            self.green.off()
            self.red.blink(on_time=self.show_s, off_time=0, n=1, background=True)
            self.buzzer.beep(on_time=self.beep_s, off_time=self.beep_s, n=self.beeps)

        self._drive("signal a fault", alarm)

    def safe_state(self) -> None:
        """Lock the door and switch everything off (start-up, shutdown, after errors)."""
        self._drive("enter the safe state", self._all_off, safe=False)

    def close(self) -> None:
        """Enter the safe state and release the pins; idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                self._all_off()
            finally:
                self._closed = True
                for device in (self.buzzer, self.red, self.green, self.relay):
                    device.close()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _all_off(self) -> None:
        # Relay first: whatever fails afterwards, the door is locked.
        for device in (self.relay, self.buzzer, self.green, self.red):
            device.off()

    def _drive(self, what: str, action: Callable[[], None], *, safe: bool = True) -> None:
        """Run ``action`` on the pins; on failure lock the door and raise GateError."""
        with self._lock:
            if self._closed:
                raise GateError(f"cannot {what}: gate is closed")
            try:
                action()
            except (GPIOZeroError, OSError) as exc:
                if safe:
                    try:
                        self._all_off()
                    except (GPIOZeroError, OSError):
                        log.exception("gate could not return to the safe state")
                raise GateError(f"cannot {what}: {type(exc).__name__}: {exc}") from exc
