"""The gate over gpiozero's MockFactory: relay pulse, lights per outcome, fault, safe state."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from device.acting.gate import Gate
from device.errors import GateError

RELAY, GREEN, RED, BUZZER = 17, 27, 22, 23


def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def states(pin: MockPin) -> list[bool]:
    return [bool(s.state) for s in pin.states]


@pytest.fixture
def gate(pin_factory: MockFactory) -> Iterator[Gate]:
    g = Gate(
        RELAY, GREEN, RED, BUZZER,
        relay_pulse_s=0.05, show_s=0.05, beep_s=0.01, pin_factory=pin_factory,
    )  # fmt: skip
    yield g
    g.close()


def test_starts_in_safe_state(gate: Gate, pin_factory: MockFactory) -> None:
    for number in (RELAY, GREEN, RED, BUZZER):
        assert states(pin_factory.pin(number)) == [False]
    assert not gate.is_open


def test_open_pulse_is_non_blocking_and_bounded(gate: Gate, pin_factory: MockFactory) -> None:
    relay = pin_factory.pin(RELAY)
    t0 = time.monotonic()
    gate.open_pulse()
    assert time.monotonic() - t0 < 0.03
    wait_for(lambda: relay.state)
    assert gate.is_open
    wait_for(lambda: not relay.state)
    assert states(relay) == [False, True, False]
    assert relay.states[2].timestamp >= 0.045  # time spent open


def test_second_pass_restarts_the_pulse_without_releasing(pin_factory: MockFactory) -> None:
    with Gate(RELAY, GREEN, RED, BUZZER, relay_pulse_s=0.3, pin_factory=pin_factory) as gate:
        relay = pin_factory.pin(RELAY)
        gate.open_pulse()
        wait_for(lambda: relay.state)
        time.sleep(0.2)
        gate.open_pulse()
        time.sleep(0.2)  # past the first pulse's end
        assert relay.state
        wait_for(lambda: not relay.state)
        assert states(relay) == [False, True, False]
        assert relay.states[2].timestamp >= 0.45


def test_active_low_relay(pin_factory: MockFactory) -> None:
    with Gate(
        RELAY, GREEN, RED, BUZZER, relay_pulse_s=0.05, active_high=False, pin_factory=pin_factory
    ) as gate:
        relay = pin_factory.pin(RELAY)
        assert relay.state  # high = released on an active-low board
        gate.open_pulse()
        wait_for(lambda: not relay.state)
        assert gate.is_open
        wait_for(lambda: relay.state)
        assert states(relay)[-3:] == [True, False, True]
        assert not gate.is_open


@pytest.mark.parametrize(
    ("outcome", "lit", "dark"),
    [("pass", GREEN, RED), ("check", RED, GREEN), ("nat_expired", RED, GREEN),
     ("invalid_credential", RED, GREEN)],
)  # fmt: skip
def test_show_lights_per_outcome(
    gate: Gate, pin_factory: MockFactory, outcome: str, lit: int, dark: int
) -> None:
    gate.show(outcome)
    on, off = pin_factory.pin(lit), pin_factory.pin(dark)
    wait_for(lambda: on.state)
    wait_for(lambda: not on.state)
    assert states(on) == [False, True, False]
    assert on.states[2].timestamp >= 0.045
    assert states(off) == [False]
    assert states(pin_factory.pin(RELAY)) == [False]  # showing never opens the door


def test_show_switches_colour(pin_factory: MockFactory) -> None:
    with Gate(RELAY, GREEN, RED, BUZZER, show_s=5.0, pin_factory=pin_factory) as gate:
        green, red = pin_factory.pin(GREEN), pin_factory.pin(RED)
        gate.show("pass")
        wait_for(lambda: green.state)
        gate.show("check")
        wait_for(lambda: red.state)
        assert not green.state


def test_fault_beeps_and_lights_red(gate: Gate, pin_factory: MockFactory) -> None:
    buzzer, red = pin_factory.pin(BUZZER), pin_factory.pin(RED)
    gate.fault()
    wait_for(lambda: len(buzzer.states) == 7)
    assert states(buzzer) == [False, True, False, True, False, True, False]
    wait_for(lambda: len(red.states) == 3)
    assert states(red) == [False, True, False]
    assert states(pin_factory.pin(GREEN)) == [False]
    assert states(pin_factory.pin(RELAY)) == [False]


def test_safe_state_locks_an_open_door_at_once(pin_factory: MockFactory) -> None:
    with Gate(
        RELAY, GREEN, RED, BUZZER, relay_pulse_s=5.0, show_s=5.0, pin_factory=pin_factory
    ) as gate:
        relay, green = pin_factory.pin(RELAY), pin_factory.pin(GREEN)
        gate.show("pass")
        gate.open_pulse()
        wait_for(lambda: relay.state and green.state)
        gate.safe_state()
        assert not relay.state and not green.state
        time.sleep(0.05)  # the cancelled pulse does not switch it back on
        assert states(relay) == [False, True, False]


def test_closed_gate_refuses_and_close_is_idempotent(gate: Gate, pin_factory: MockFactory) -> None:
    gate.close()
    gate.close()
    with pytest.raises(GateError, match="closed"):
        gate.open_pulse()
    with pytest.raises(GateError):
        gate.show("pass")
    assert states(pin_factory.pin(RELAY)) == [False]


def test_pin_conflict_is_a_gate_error_and_releases_claimed_pins(
    gate: Gate, pin_factory: MockFactory
) -> None:
    with pytest.raises(GateError, match="cannot set up gate GPIO"):
        Gate(5, 6, RED, 13, pin_factory=pin_factory)  # RED belongs to the first gate
    with Gate(5, 6, 12, 13, pin_factory=pin_factory):  # 5 and 6 were released
        pass


def test_invalid_timing_is_refused(pin_factory: MockFactory) -> None:
    with pytest.raises(ValueError):
        Gate(RELAY, GREEN, RED, BUZZER, relay_pulse_s=0, pin_factory=pin_factory)
