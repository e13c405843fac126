"""A real server on loopback for the browser tests, with a real kiosk agent.

Playwright's sync API runs in the test's thread; the server (aiohttp ``AppRunner`` on a
free port of 127.0.0.1) and the kiosk agent (device.runtime, a simulated reader on a pty,
mock speaker and GPIO pins) run on an event loop in a second thread. :meth:`Live.call`
runs a coroutine there and waits for its result.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from gpiozero.pins.mock import MockFactory

from core.bundle import Bundle
from device.acting.voice import MockPlayer
from device.agent import Agent
from device.config import load_bundle
from device.runtime import built_agent
from firmware_bridge.samsim import SimulatedSam
from firmware_bridge.simserve import SimulatedReaderPort
from provisioning.registry import DeviceBundle, add_device, write_bundle
from server.fleet.sessions import mint_token
from server.storage.db import connect
from siheyi.cli import local_fleet
from tests.board.support import board_app, decisions, status
from tests.e2e_support import device_config, tap

T = TypeVar("T")


class Live:
    """The server and its loop thread; :meth:`close` stops everything it started."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-server")
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._thread.start()
        self.call(self._start())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        self._runner = web.AppRunner(board_app(self.db), shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    @property
    def app(self) -> web.Application:
        assert self._runner is not None
        return self._runner.app

    def add_kiosk(self, serial: str, site: str, gate: str) -> DeviceBundle:
        return add_device(local_fleet(None, self.db), serial, site, gate, server_url=self.url)

    def device_auth(self, device: DeviceBundle) -> dict[str, str]:
        with connect(self.db) as conn:
            return {"Authorization": f"Bearer {mint_token(conn, device.device_id)}"}

    def report(self, device: DeviceBundle, taps: Sequence[Any] = (), **health: Any) -> None:
        """A heartbeat (and decided taps) from a kiosk with no agent, over HTTP."""
        self.call(self._report(device, list(taps), health))

    async def _report(self, device: DeviceBundle, taps: list[Any], health: Any) -> None:
        auth = self.device_auth(device)
        async with aiohttp.ClientSession(self.url, headers=auth) as http:
            async with http.post("/v1/heartbeat", json=status(**health)) as resp:
                assert resp.status == 200, await resp.text()
            if taps:
                body = {"events": decisions(taps, datetime.now(UTC))}
                async with http.post("/v1/audit", json=body) as resp:
                    assert resp.status == 200, await resp.text()

    def wait_for_rows(self, sql: str, params: Sequence[Any], timeout: float = 20.0) -> list[Any]:
        """The rows of ``sql`` once there are some (the kiosk uploads its journal by itself)."""
        deadline = time.monotonic() + timeout
        while True:
            with connect(self.db) as conn:
                rows = conn.execute(sql, tuple(params)).fetchall()
            if rows or time.monotonic() > deadline:
                return list(rows)
            time.sleep(0.1)

    def close(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Kiosk:
    """A real agent for ``bundle`` with a simulated reader, run on the server's loop."""

    def __init__(self, live: Live, issued: DeviceBundle, tmp: Path, prompts: Path) -> None:
        self.live = live
        self.sim = SimulatedReaderPort(SimulatedSam(), link=tmp / "reader").start()
        write_bundle(issued, tmp / "bundle.json")
        self.bundle: Bundle = load_bundle(tmp / "bundle.json")
        self.config = device_config(tmp, self.sim, prompts)
        self.pins = MockFactory()
        self.player = MockPlayer()
        self._stack = AsyncExitStack()
        self.stopped = False
        self.agent: Agent = live.call(self._start())

    async def _start(self) -> Agent:
        agent = await self._stack.enter_async_context(
            built_agent(self.config, bundle=self.bundle, player=self.player, pin_factory=self.pins)
        )
        for _ in range(400):
            if agent._reader is not None and agent._reader.connected:
                break
            await asyncio.sleep(0.05)
        return agent

    def tap(self, id_number: str) -> str:
        """Tap a card; the outcome the kiosk decided."""
        return str(self.live.call(tap(self.agent, self.sim, id_number)).decision.outcome)

    def stop(self) -> None:
        """The kiosk goes away (power cut): no more heartbeats, its socket closes."""
        if not self.stopped:
            self.stopped = True
            self.live.call(self._stack.aclose())
            self.sim.stop()
