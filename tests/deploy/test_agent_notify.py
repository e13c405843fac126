"""``kiosk device run`` (run_device) under a notify socket, as systemd runs the agent
(Type=notify, WatchdogSec): READY once the agent has started, watchdog pings from its event
loop, STOPPING on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.runtime import run_device
from firmware_bridge.simserve import SimulatedReaderPort
from tests.e2e_support import Fleet, device_config, fleet, prompt_cache, sim

__all__ = ["fleet", "prompt_cache", "sim"]  # fixtures used below


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    with tempfile.TemporaryDirectory(prefix="sdn") as folder:
        path = str(Path(folder) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.setblocking(False)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            monkeypatch.setenv("WATCHDOG_USEC", "200000")
            monkeypatch.setenv("SYSTEMD_EXEC_PID", str(os.getpid()))
            monkeypatch.delenv("WATCHDOG_PID", raising=False)
            yield sock


async def _next(sock: socket.socket, skip_pings: bool = True) -> list[str]:
    loop = asyncio.get_running_loop()
    while True:
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 30)
        lines = data.decode().split("\n")
        if not (skip_pings and lines == ["WATCHDOG=1"]):
            return lines


async def test_agent_tells_systemd_ready_pings_and_stopping(
    tmp_path: Path,
    fleet: Fleet,
    sim: SimulatedReaderPort,
    prompt_cache: Path,
    notify_socket: socket.socket,
) -> None:
    agent = asyncio.create_task(run_device(device_config(tmp_path, sim, prompt_cache)))
    try:
        ready = await _next(notify_socket)
        assert ready == ["READY=1", f"STATUS=kiosk {fleet.bundle.device_id} running"]
        for _ in range(2):
            assert await _next(notify_socket, skip_pings=False) == ["WATCHDOG=1"]
        os.kill(os.getpid(), signal.SIGTERM)  # run_device's own handler: a clean stop
        assert await _next(notify_socket) == ["STOPPING=1"]
        await asyncio.wait_for(agent, 30)
    finally:
        agent.cancel()
