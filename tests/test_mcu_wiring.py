"""The MCU wiring end to end: SAM sim → MicroPython firmware → bridge → agent → server, and the
relay command back to the MCU. The firmware runs in the real MicroPython unix port; the two
serial links are ptys (the host link through a null-modem relay, so either side can be
unplugged and plugged back)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import subprocess
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from device.acting.voice import MockPlayer
from device.agent import TapResult
from device.config import DeviceConfig
from device.runtime import built_agent
from device.sources.mculink import McuGate, McuLink
from firmware_bridge import bridge
from firmware_bridge.samsim import SimulatedSam
from firmware_bridge.simserve import SimulatedReaderPort
from tests.e2e_support import (
    Fleet,
    _true,
    audit_rows,
    card,
    fleet,
    prompt_cache,
    tap,
    wait_for,
)
from tests.firmware_bridge.test_micropython import ROOT, micropython_binary

__all__ = ["fleet", "prompt_cache"]  # fixtures used below

pytestmark = pytest.mark.micropython


class NullModem:
    """Two ptys whose masters are cross-wired: `a` and `b` are the two cable ends."""

    def __init__(self, a: Path, b: Path) -> None:
        self.links = (a, b)
        self._fds: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.plug()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def plug(self) -> None:
        fds = []
        for link in self.links:
            master, slave = os.openpty()
            tty.setraw(master)
            tty.setraw(slave)
            tmp = link.with_name(link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(os.ttyname(slave))
            os.replace(tmp, link)
            fds += [master, slave]
        with self._lock:
            self._fds = fds

    def unplug(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, []
        for link in self.links:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.unplug()

    def _pump(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                fds = list(self._fds)
            if not fds:
                time.sleep(0.02)
                continue
            a, b = fds[0], fds[2]
            try:
                ready, _, _ = select.select([a, b], [], [], 0.05)
                for fd in ready:
                    data = os.read(fd, 4096)
                    os.write(b if fd == a else a, data)
            except OSError:
                time.sleep(0.02)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[SimulatedReaderPort, NullModem, Path]]:
    sim = SimulatedReaderPort(SimulatedSam(), link=tmp_path / "sam")
    sim.baud = 115200
    sim.start()
    modem = NullModem(tmp_path / "fw", tmp_path / "pi")
    stderr = open(tmp_path / "mcu.stderr", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            micropython_binary(),
            "-m",
            "firmware_bridge.mcu",
            "--sam",
            str(tmp_path / "sam"),
            "--host",
            str(tmp_path / "fw"),
            "--max-open-ms",
            "1500",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        yield sim, modem, tmp_path / "pi"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()
        modem.close()
        sim.stop()
    assert proc.returncode in (0, -15, 1), (tmp_path / "mcu.stderr").read_text()


def mcu_config(tmp_path: Path, pi: Path, prompts: Path) -> DeviceConfig:
    return DeviceConfig.from_dict(
        {
            "state_dir": str(tmp_path / "kiosk"),
            "reader": {"url": str(pi), "wiring": "mcu"},
            "voice": {"player": "mock", "cache_dir": str(prompts)},
            "gpio": {"pin_factory": "mock", "relay_pulse_s": 0.3},
            "upload": {"interval_s": 0.2},
        }
    )


async def test_tap_through_the_mcu_and_relay_back(
    tmp_path: Path,
    fleet: Fleet,
    rig: tuple[SimulatedReaderPort, NullModem, Path],
    prompt_cache: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="device.sources.mculink")
    sim, _modem, pi = rig
    player = MockPlayer()
    config = mcu_config(tmp_path, pi, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=player, pin_factory=MockFactory()
    ) as agent:
        link = agent._reader
        assert isinstance(link, McuLink)
        await wait_for(lambda: _true(link.connected), timeout=10)
        # The MCU's PONG reaches the heartbeat as its firmware version and uptime.
        await wait_for(lambda: _true(bool(link.health()["mcu_version"])), timeout=10)
        assert link.health()["mcu_version"] == "siheyi-bridge 1.0.0"
        assert isinstance(link.health()["mcu_uptime_ms"], int)
        result = await tap(agent, sim, fleet.people["pass"][0])
        assert result.decision.outcome == "pass" and not result.decision.offline
        assert player.played[-1][1] == "绿码通行"
        gate = agent._gate
        assert isinstance(gate, McuGate) and gate.last_relay_seq is not None
        ack = await asyncio.to_thread(link.wait_ack, gate.last_relay_seq, 2.0)
        assert ack is not None and ack[0] == bridge.STATUS_OK
        assert int.from_bytes(ack[1][:2], "big") == 300  # granted the configured pulse
        # The MCU switched the relay on, then off by itself (its LOG lines reach our log).
        await wait_for(lambda: _true("relay off" in caplog.text), timeout=3)
        assert "MCU: relay on 300 ms" in caplog.text
        # one tap per presence across the bridge too: a card left on the reader is one tap
        results: asyncio.Queue[object] = asyncio.Queue()
        agent.add_listener(results.put_nowait)
        sim.place(card(fleet.people["check"][0]))
        await asyncio.wait_for(results.get(), timeout=5)
        await asyncio.sleep(1.0)
        sim.remove()
        assert results.empty()

        async def uploaded() -> bool:
            rows = await asyncio.to_thread(audit_rows, fleet.db)
            return sum(1 for r in rows if r["kind"] == "decision") == 2

        await wait_for(uploaded, timeout=10)


async def test_either_link_unplugged_recovers_within_two_seconds(
    tmp_path: Path,
    fleet: Fleet,
    rig: tuple[SimulatedReaderPort, NullModem, Path],
    prompt_cache: Path,
) -> None:
    sim, modem, pi = rig
    config = mcu_config(tmp_path, pi, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=MockPlayer(), pin_factory=MockFactory()
    ) as agent:
        link = agent._reader
        assert isinstance(link, McuLink)
        await wait_for(lambda: _true(link.connected), timeout=10)
        # the Pi <-> MCU cable
        modem.unplug()
        await wait_for(lambda: _true(not link.connected), timeout=4)
        modem.plug()
        t0 = time.monotonic()
        await wait_for(lambda: _true(link.connected), timeout=4)
        assert time.monotonic() - t0 < 2.5
        # the MCU <-> SAM cable
        sim.unplug()
        await wait_for(lambda: _true(not link.connected), timeout=5)
        sim.replug()
        t0 = time.monotonic()
        await wait_for(lambda: _true(link.connected), timeout=5)
        assert time.monotonic() - t0 < 2.5
        result = await tap(agent, sim, fleet.people["pass"][0])
        assert result.decision.outcome == "pass"
        errors = link.health()["errors"]
        assert errors.get("disconnects", 0) + errors.get("link_timeout", 0) >= 1


async def test_bad_read_replies_through_the_mcu_are_one_unreadable_tap_each(
    tmp_path: Path,
    fleet: Fleet,
    rig: tuple[SimulatedReaderPort, NullModem, Path],
    prompt_cache: Path,
) -> None:
    """Issue 10 part 5 in the MCU wiring: a truncated, noisy or late read reply ends in the
    firmware's read timeout (3 s); the Pi turns it into one "tap again" per presented card."""
    from tests.device.test_unreadable import ManglingSam

    sim, _modem, pi = rig
    sam_module = ManglingSam()
    sam_module.late_s = 3.4  # past the firmware's READ_TIMEOUT_MS
    sim.sam = sam_module
    player = MockPlayer()
    config = mcu_config(tmp_path, pi, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=player, pin_factory=MockFactory()
    ) as agent:
        link = agent._reader
        assert isinstance(link, McuLink)
        await wait_for(lambda: _true(link.connected), timeout=10)
        results: asyncio.Queue[TapResult] = asyncio.Queue()
        agent.add_listener(results.put_nowait)
        for how in ("truncate", "noise", "late"):
            sam_module.mangle_next_read = how
            sim.place(card(fleet.people["pass"][0]))
            result = await asyncio.wait_for(results.get(), timeout=6)
            assert result.decision.outcome == "invalid_credential", how
            assert result.decision.reasons == ("unreadable_card",)
            assert result.spoken and player.texts[-1] == "证件无效，请重新刷卡"
            await asyncio.sleep(0.8 if how != "late" else 3.0)  # the card stays: no 2nd tap
            assert results.empty(), how
            sim.remove()
            await asyncio.sleep(0.3)
        result = await tap(agent, sim, fleet.people["pass"][0])
        assert result.decision.outcome == "pass"
        assert link.health()["errors"].get("unreadable") == 3

        async def recorded() -> bool:
            rows = await asyncio.to_thread(audit_rows, fleet.db)
            return sum(1 for r in rows if "card_unreadable" in r["detail"]) == 3

        await wait_for(recorded, timeout=10)
