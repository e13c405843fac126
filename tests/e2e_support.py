"""Shared parts of the end-to-end tests: a real server with demo people, a simulated reader
on a pty, and helpers to tap a card and wait for what follows."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from gpiozero.pins.mock import MockFactory

from core.bundle import Bundle
from device.acting.voice import MockPlayer
from device.agent import Agent, TapResult
from device.config import DeviceConfig, load_bundle
from device.runtime import built_agent
from firmware_bridge.samsim import SimulatedSam
from firmware_bridge.simserve import SimulatedReaderPort
from provisioning.registry import add_device, write_bundle
from server.app import create_app
from server.config import ServerConfig
from server.verify.demodata import generate_people, load_demo_data, pick_demo_people
from siheyi.cli import local_fleet

NOW = dt.datetime.now(dt.UTC)
PEOPLE = 200
SEED = 11
RELAY = 17


@dataclass
class Fleet:
    db: Path
    url: str
    bundle: Bundle
    people: dict[str, list[str]]


@pytest.fixture(scope="session")
def prompt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prompts are rendered once per test session, as a kiosk renders them once at install."""
    return tmp_path_factory.mktemp("prompts")


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    db = tmp_path / "server.db"
    await asyncio.to_thread(load_demo_data, db, PEOPLE, SEED, now=NOW)
    picked = pick_demo_people(
        generate_people(PEOPLE, SEED, NOW), NOW, {"pass": 2, "check": 1, "nat_expired": 1}
    )
    people: dict[str, list[str]] = {}
    for outcome, number in picked:
        people.setdefault(outcome, []).append(number)
    server = TestServer(create_app(ServerConfig.default(database=db)))
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    issued = add_device(local_fleet(None, db), "SN-E2E-1", "site-a", server_url=url)
    write_bundle(issued, tmp_path / "bundle.json")
    try:
        yield Fleet(db, url, load_bundle(tmp_path / "bundle.json"), people)
    finally:
        await server.close()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatedReaderPort]:
    port = SimulatedReaderPort(SimulatedSam(), link=tmp_path / "reader").start()
    yield port
    port.stop()


def card(id_number: str) -> dict[str, Any]:
    return {
        "card_type": "resident",
        "name": "李四",
        "sex": "2",
        "nation": "01",
        "birth": f"{id_number[6:10]}-{id_number[10:12]}-{id_number[12:14]}",
        "address": "上海市徐汇区漕河泾街道8号",
        "id_number": id_number,
        "authority": "上海市公安局徐汇分局",
        "valid_from": "2021-05-01",
        "valid_to": "2041-05-01",
    }


def device_config(
    tmp_path: Path, sim: SimulatedReaderPort, prompts: Path, **verify: Any
) -> DeviceConfig:
    return DeviceConfig.from_dict(
        {
            "bundle": str(tmp_path / "bundle.json"),
            "state_dir": str(tmp_path / "kiosk"),
            "reader": {"url": sim.path, "poll_interval_s": 0.02},
            "verify": verify or {"deadline_s": 1.2},
            "voice": {"player": "mock", "cache_dir": str(prompts)},
            "gpio": {"pin_factory": "mock", "relay_pulse_s": 0.2},
            "upload": {"interval_s": 0.2},
            "heartbeat": {"interval_s": 0.5},
        }
    )


async def tap(agent: Agent, sim: SimulatedReaderPort, id_number: str) -> TapResult:
    results: asyncio.Queue[TapResult] = asyncio.Queue()
    agent.add_listener(results.put_nowait)
    sim.place(card(id_number))
    try:
        return await asyncio.wait_for(results.get(), timeout=5)
    finally:
        sim.remove()
        agent._listeners.clear()


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    """Poll until ``predicate`` holds. The limit is generous because CI runs these next to
    PostgreSQL tests whose fsyncs can stall a journal write for seconds; a condition that
    holds returns at once, so only a real failure pays for the wait."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def audit_rows(db: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM audit_events ORDER BY seq").fetchall()


async def _true(value: bool) -> bool:
    return value


async def reader_ready(agent: Agent) -> None:
    """Until the agent's reader is connected: the first step of every tap test."""
    await wait_for(lambda: _true(agent._reader is not None and agent._reader.connected))


@contextlib.asynccontextmanager
async def ready_agent(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> AsyncIterator[Agent]:
    """The end-to-end agent with a mock player and mock pins, its reader connected."""
    config = device_config(tmp_path, sim, prompt_cache)
    async with built_agent(
        config, bundle=fleet.bundle, player=MockPlayer(), pin_factory=MockFactory()
    ) as agent:
        await reader_ready(agent)
        yield agent
