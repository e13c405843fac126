"""The command channel, kiosk side: what a kiosk executes and what it refuses, and a real
agent (mock relay, mock speaker) driven by a guard through a real server on loopback."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpiozero.pins.mock import MockFactory

import device.runtime
from core.commands import SignedCommand, command_message
from device.acting.voice import MockPlayer
from device.agent import Agent
from device.config import DeviceConfig, load_bundle
from device.link.client import ServerClient
from device.link.commands import CommandLink
from device.runtime import built_agent
from provisioning.registry import add_device, write_bundle
from server.config import ServerConfig
from server.offline.keys import SigningKey
from server.storage.db import connect
from siheyi.cli import local_fleet
from tests.e2e_support import RELAY, prompt_cache, wait_for
from tests.server.users_support import bearer, token_for

from .support import add_people, command_app

__all__ = ["prompt_cache"]

KEY = Ed25519PrivateKey.generate()
SERVER = SigningKey(KEY, KEY.public_key().public_bytes_raw())
NOW = 1_800_000_000


def signed(key: SigningKey = SERVER, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "c-1",
        "device_id": "k-1",
        "command": "gate_open",
        "args": {"by": "gina", "reason": "van"},
        "issued_at": NOW,
        "expires_at": NOW + 10,
    }
    cmd = SignedCommand(**{**base, **fields})
    sig = key.sign(command_message(cmd)).hex()
    return msgspec.to_builtins(msgspec.structs.replace(cmd, signature=sig))  # type: ignore[no-any-return]


class Kiosk:
    """A command link with a recording executor and a controllable clock."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.refusals: list[tuple[str, str]] = []
        self.now = float(NOW)
        self.link = CommandLink(
            ServerClient("http://127.0.0.1:9", token="t"),
            "k-1",
            SERVER.public_hex,
            self.execute,
            on_refused=self.refused,
            wall_clock=lambda: self.now,
        )

    async def execute(self, cmd: SignedCommand) -> str:
        self.done.append(cmd.id)
        return ""

    async def refused(self, command_id: str, why: str) -> None:
        self.refusals.append((command_id, why))


async def test_a_verified_command_is_executed_once_and_acknowledged() -> None:
    kiosk = Kiosk()
    assert await kiosk.link.accept(signed()) == {"id": "c-1", "ok": True}
    assert await kiosk.link.accept(signed()) is None  # the same command again: a replay
    await kiosk.link.accept_all([signed(), signed(id="c-2")])  # heartbeat fallback
    assert kiosk.done == ["c-1", "c-2"] and kiosk.refusals == []


async def test_forged_foreign_and_stale_commands_are_refused_and_reported() -> None:
    kiosk = Kiosk()
    other = Ed25519PrivateKey.generate()
    forger = SigningKey(other, other.public_key().public_bytes_raw())
    tampered = {**signed(id="c-3"), "args": {"by": "gina", "reason": "other"}}
    assert await kiosk.link.accept(signed(forger, id="c-1")) is None
    assert await kiosk.link.accept(signed(id="c-2", device_id="k-2")) is None
    assert await kiosk.link.accept(tampered) is None
    assert await kiosk.link.accept(signed(id="c-4", command="self_destruct")) is None
    assert await kiosk.link.accept({"id": 5}) is None
    kiosk.now = NOW + 11  # an offline kiosk comes back: its old orders have expired
    assert await kiosk.link.accept(signed(id="c-5")) == {
        "id": "c-5",
        "ok": False,
        "error": "expired",
    }
    assert kiosk.done == []
    assert kiosk.refusals == [
        ("c-1", "bad_signature"),
        ("c-2", "wrong_device"),
        ("c-3", "bad_signature"),
        ("c-4", "unknown_command"),
        ("", "malformed"),
        ("c-5", "expired"),
    ]


async def test_expiry_is_judged_by_the_servers_clock() -> None:
    kiosk = Kiosk()
    kiosk.now = NOW + 100  # the kiosk's clock runs 100 s fast ...
    kiosk.link._client.clock_skew_s = -100.0  # ... and the server said so
    assert await kiosk.link.accept(signed()) == {"id": "c-1", "ok": True}


# -- a real agent through a real server --------------------------------------------------


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], Path]]:
    db = tmp_path / "server.db"
    app = command_app(ServerConfig.default(database=db))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    add_people(db)
    url = str(client.make_url("")).rstrip("/")
    issued = add_device(local_fleet(None, db), "SN-CMD-1", "site-a", "gate-1", server_url=url)
    write_bundle(issued, tmp_path / "bundle.json")
    try:
        yield client, db
    finally:
        await client.close()


def kiosk_config(tmp_path: Path, prompts: Path) -> DeviceConfig:
    return DeviceConfig.from_dict(
        {
            "bundle": str(tmp_path / "bundle.json"),
            "state_dir": str(tmp_path / "kiosk"),
            "voice": {"player": "mock", "cache_dir": str(prompts)},
            "gpio": {"pin_factory": "mock", "relay_pulse_s": 0.2},
            "upload": {"interval_s": 0.2},
            "heartbeat": {"interval_s": 0.5},
            "commands": {"gate_prompt": "请通行"},
        }
    )


def guard_events(db: Path) -> list[dict[str, Any]]:
    with connect(db) as conn:
        rows = conn.execute(
            "SELECT detail, prompt FROM audit_events WHERE kind = 'guard' ORDER BY seq"
        ).fetchall()
    return [{**json.loads(detail), "prompt": prompt} for detail, prompt in rows]


async def test_a_guard_opens_a_real_kiosks_gate_and_the_audit_says_who_and_why(
    tmp_path: Path,
    server: tuple[TestClient[Any, Any], Path],
    prompt_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, db = server
    bundle = load_bundle(tmp_path / "bundle.json")
    config = kiosk_config(tmp_path, prompt_cache)
    # the runtime's wiring of the command settings (server key, prompts)
    monkeypatch.setattr(
        device.runtime,
        "Agent",
        functools.partial(
            Agent,
            server_key_hex=bundle.server_key,
            gate_prompt=config.commands.gate_prompt,
            test_prompt=config.commands.test_prompt,
        ),
    )
    player, factory = MockPlayer(), MockFactory()
    headers = bearer(await token_for(client, "gina"))
    gate_url = f"/v1/guard/kiosks/{bundle.device_id}/gate"
    async with built_agent(
        config, bundle=bundle, player=player, pin_factory=factory, reader=None
    ) as agent:
        link = agent.commands
        assert link is not None
        await wait_for(lambda: _true(link.connected))
        relay = factory.pin(RELAY)
        relay.clear_states()
        resp = await client.post(gate_url, json={"reason": "送货车辆"}, headers=headers)
        assert resp.status == 200, await resp.text()
        assert True in [s.state for s in relay.states]  # pulsed before the ack came back
        assert player.played[-1][1] == "请通行"
        resp = await client.post(
            f"/v1/guard/kiosks/{bundle.device_id}/commands",
            json={"command": "speak_test"},
            headers=headers,
        )
        assert resp.status == 200 and player.played[-1][1] == "语音测试"
        resp = await client.post(
            f"/v1/guard/kiosks/{bundle.device_id}/commands",
            json={"command": "config_reload"},
            headers=headers,
        )
        assert resp.status == 200
        await wait_for(lambda: _has_guard_event(db))
    (event,) = guard_events(db)
    assert event["by"] == "gina" and event["reason"] == "送货车辆"
    assert event["command"] == "gate_open" and event["prompt"] == "请通行"
    assert len(event["command_id"]) == 32
    # the kiosk stopped: its socket closed, so it is down at once and a gate open is 409
    await wait_for(lambda: _is_down(db))
    resp = await client.post(gate_url, json={"reason": "again"}, headers=headers)
    assert resp.status == 409


async def _true(value: bool) -> bool:
    return value


async def _has_guard_event(db: Path) -> bool:
    return bool(await asyncio.to_thread(guard_events, db))


async def _is_down(db: Path) -> bool:
    def query() -> bool:
        with connect(db) as conn:
            return conn.execute("SELECT 1 FROM kiosk_down").fetchone() is not None

    return await asyncio.to_thread(query)
