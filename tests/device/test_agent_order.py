"""Audit before actuation, in one process (issue 10, part 1): the order of a tap's steps and
what happens when the journal cannot take the decision. The chaos test
(tests/test_chaos_tap.py) checks the same promise with kill -9; this one says which step
broke it, in milliseconds."""

from __future__ import annotations

import time
from typing import Any

from device.agent import Agent
from device.deciding.verifier import Decision
from device.errors import JournalError
from device.sources.credentials import Credential


class Steps:
    """Every part appends what it did here, in order."""

    def __init__(self) -> None:
        self.done: list[str] = []


class FakeVerifier:
    def __init__(self, steps: Steps, outcome: str) -> None:
        self._steps, self._outcome = steps, outcome
        self.clock = type("Clock", (), {"trusted": staticmethod(lambda: True)})()

    async def decide(self, cred: Credential, tap_id: str) -> Decision:
        self._steps.done.append("decide")
        return Decision(tap_id, self._outcome, "绿码通行", False, "1101**********1234", "p" * 8)


class FakeJournal:
    def __init__(self, steps: Steps, fail: bool = False) -> None:
        self._steps, self._fail = steps, fail
        self.events: list[dict[str, Any]] = []

    async def append(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self._fail:
            self._steps.done.append("journal failed")
            raise JournalError("disk I/O error")
        self._steps.done.append(f"journal {fields['kind']}")
        self.events.append({**fields, "seq": len(self.events) + 1})
        return self.events[-1]


class FakeVoice:
    def __init__(self, steps: Steps) -> None:
        self._steps = steps

    async def say(
        self, text: str, *, outcome: str | None = None, card_type: str = "resident"
    ) -> float:
        self._steps.done.append(
            f"say {outcome}" + ("" if card_type == "resident" else f" {card_type}")
        )
        return time.monotonic()


class FakeGate:
    def __init__(self, steps: Steps) -> None:
        self._steps = steps

    def open_pulse(self) -> None:
        self._steps.done.append("relay")

    def show(self, outcome: str) -> None:
        self._steps.done.append(f"show {outcome}")

    def fault(self) -> None:
        self._steps.done.append("buzzer")

    def safe_state(self) -> None: ...

    def close(self) -> None: ...


class FakeUploader:
    def poke(self) -> None: ...


def agent(steps: Steps, outcome: str = "pass", *, journal_fails: bool = False) -> Agent:
    return Agent(
        device_id="dev-1",
        client=None,  # type: ignore[arg-type]
        verifier=FakeVerifier(steps, outcome),  # type: ignore[arg-type]
        voice=FakeVoice(steps),  # type: ignore[arg-type]
        gate=FakeGate(steps),
        journal=FakeJournal(steps, journal_fails),  # type: ignore[arg-type]
        uploader=FakeUploader(),  # type: ignore[arg-type]
        reader=None,
    )


def cred() -> Credential:
    return Credential(kind="id_card", id_number="", completed_at=time.monotonic())


async def test_a_pass_is_journalled_before_the_gate_opens_and_the_prompt_starts() -> None:
    steps = Steps()
    result = await agent(steps).handle(cred())
    assert steps.done == ["decide", "journal decision", "show pass", "relay", "say pass"]
    assert result.spoken and result.seq == 1


async def test_the_prompt_is_told_the_card_type() -> None:
    """A foreigner's residence card may hear a second language (device.acting.languages)."""
    steps = Steps()
    foreign = Credential(kind="id_card", id_number="", completed_at=time.monotonic(), card_type="Y")
    await agent(steps).handle(foreign)
    assert steps.done[-1] == "say pass Y"


async def test_a_decision_that_cannot_be_journalled_never_opens_the_gate() -> None:
    steps = Steps()
    result = await agent(steps, journal_fails=True).handle(cred())
    assert "relay" not in steps.done and "say pass" not in steps.done
    # The citizen is not left in silence: the buzzer and the fault prompt say "get staff".
    assert steps.done[:3] == ["decide", "journal failed", "buzzer"]
    assert "say fault" in steps.done
    assert not result.spoken and result.seq is None


async def test_a_clock_step_after_the_decision_is_not_vouched_for_in_the_event() -> None:
    """The decision was made on a trusted clock; the wall clock stepped before the event was
    stamped (the trust check sees the step): the event must not claim a trusted time."""
    steps = Steps()
    kiosk = agent(steps)
    verifier: Any = kiosk._verifier
    verifier.clock = type("Clock", (), {"trusted": staticmethod(lambda: False)})()
    await kiosk.handle(cred())
    journal: Any = kiosk._journal
    assert journal.events[0]["clock_trusted"] is False


class OverflowJournal(FakeJournal):
    """A full disk: every event is only held in memory until the server takes it."""

    def __init__(self, steps: Steps) -> None:
        super().__init__(steps)
        self.held: set[int] = set()

    async def append(self, fields: dict[str, Any]) -> dict[str, Any]:
        fields = {**fields, "detail": {**fields.get("detail", {}), "journal_overflow": True}}
        event = await super().append(fields)
        self.held.add(event["seq"])
        return event

    def holds(self, seq: int) -> bool:
        return seq in self.held


class ServerUploader(FakeUploader):
    def __init__(self, journal: OverflowJournal, steps: Steps, *, reachable: bool) -> None:
        self._journal, self._steps, self._reachable = journal, steps, reachable

    async def drain_once(self) -> int:
        self._steps.done.append("upload now")
        if not self._reachable:
            raise ConnectionError("server away")
        taken = len(self._journal.held)
        self._journal.held.clear()
        return taken


async def test_a_decision_held_in_memory_acts_only_once_the_server_has_it() -> None:
    """Issue 10, parts 1 and 2: on a full disk a pass is durable only at the server; the gate
    opens after the server took it, and stays shut when neither disk nor server keeps it."""
    for reachable in (True, False):
        steps = Steps()
        kiosk = agent(steps)
        journal = OverflowJournal(steps)
        kiosk._journal = journal  # type: ignore[assignment]
        kiosk._uploader = ServerUploader(journal, steps, reachable=reachable)  # type: ignore[assignment]
        await kiosk.handle(cred())
        assert steps.done[:3] == ["decide", "journal decision", "upload now"]
        assert ("relay" in steps.done) is reachable
        assert ("say pass" in steps.done) is reachable
