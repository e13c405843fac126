"""A voice pack from the real server to a running agent, over loopback: the admin publishes
and names it in the fleet configuration, the heartbeat brings the setting, the agent fetches
it with its session, verifies it against the pinned release key and speaks it; a forged
pack is refused and journalled, and a restart without the server speaks the last pack."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from gpiozero.pins.mock import MockFactory

from core.outcomes import DEFAULT_PROMPTS
from core.wire_voice import VoicePackUpload
from device.acting.voice import MockPlayer, PromptRenderer
from device.agent import Agent
from device.config import TEST_PROMPT, DeviceConfig, load_bundle
from device.runtime import built_agent
from provisioning.registry import add_device, write_bundle
from server.app import create_app
from server.config import ServerConfig
from server.fleet.registry import set_config
from server.storage.db import connect, transaction
from server.voicepacks import store, views
from siheyi.cli import local_fleet
from tests.device.packkit import SignedPack, release_key, signed_pack, tone
from tests.e2e_support import wait_for

PASS = DEFAULT_PROMPTS["pass"]
NEW_CHECK = "请出示绿码"


@dataclass
class Rig:
    tmp: Path
    db: Path
    url: str
    key: Any
    public: str

    def publish(self, pack: SignedPack) -> None:
        upload = VoicePackUpload(pack.sha256, pack.signature, len(pack.data), pack.data)
        with connect(self.db) as conn, transaction(conn):
            store.publish(conn, upload, "test-words", "admin", "2026-11-28T20:00:00Z")

    def set_config(self, scope: str, target: str, key: str, value: Any) -> None:
        with connect(self.db) as conn, transaction(conn):
            set_config(conn, scope, target, key, value)

    def config(self, server_url: str | None = None, heartbeat_s: float = 5) -> DeviceConfig:
        return DeviceConfig.from_dict(
            {
                "bundle": str(self.tmp / "bundle.json"),
                "state_dir": str(self.tmp / "kiosk"),
                "server_url": server_url or self.url,
                "voice": {"player": "mock", "cache_dir": str(self.tmp / "prompts")},
                "gpio": {"pin_factory": "mock"},
                "heartbeat": {"interval_s": heartbeat_s},
                "upload": {"interval_s": 0.2},
                "update": {"release_key": self.public},
            }
        )

    @asynccontextmanager
    async def agent(
        self, server_url: str | None = None, heartbeat_s: float = 5
    ) -> AsyncIterator[Agent]:
        config = self.config(server_url, heartbeat_s)
        bundle = load_bundle(self.tmp / "bundle.json")
        async with built_agent(
            config, bundle=bundle, player=MockPlayer(), pin_factory=MockFactory(), reader=None
        ) as agent:
            yield agent

    def journalled(self, event: str) -> list[dict[str, Any]]:
        """Details of the system events of that name the server received."""
        with sqlite3.connect(self.db) as conn:
            rows = conn.execute("SELECT detail FROM audit_events WHERE kind = 'system'").fetchall()
        details = [json.loads(row[0]) for row in rows]
        return [d for d in details if d.get("event") == event]


@pytest.fixture(scope="session")
def warm_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("agent-pack-prompts")
    PromptRenderer(cache).prerender([*DEFAULT_PROMPTS.values(), TEST_PROMPT, NEW_CHECK])
    return cache


@pytest.fixture
async def rig(tmp_path: Path, warm_prompts: Path) -> AsyncIterator[Rig]:
    shutil.copytree(warm_prompts, tmp_path / "prompts")
    db = tmp_path / "server.db"
    server = TestServer(create_app(ServerConfig.default(database=db)))
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    issued = add_device(local_fleet(None, db), "SN-VOICE-1", "site-a", server_url=url)
    write_bundle(issued, tmp_path / "bundle.json")
    key, public = release_key()
    try:
        yield Rig(tmp_path, db, url, key, public)
    finally:
        await server.close()


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def _true(value: bool) -> bool:
    return value


async def test_a_published_pack_reaches_the_kiosk_and_a_forged_one_does_not(rig: Rig) -> None:
    pack = signed_pack(rig.key, {"pass": tone(rig.tmp / "pass.flac")}, {"check": NEW_CHECK})
    rig.publish(pack)
    rig.set_config("fleet", "", "voice.pack", pack.sha256)
    rig.set_config("site", "site-a", "voice.languages", {"J": "en"})
    label = f"test-words@{pack.sha256[:12]}"
    async with rig.agent() as agent:
        voice = agent._voice
        await wait_for(lambda: _true(voice.pack == label))
        clip = voice.clip_for(PASS, "pass")
        assert clip is not None and clip.name.startswith("clip-")  # levelled recording
        second = voice.second_language
        assert second is not None and second.language_for("J") == "en"
        assert (await agent.status())["audio"]["pack"] == label

        other_key, _ = release_key()
        forged = signed_pack(other_key, {"pass": tone(rig.tmp / "forged.flac", 300)})
        rig.publish(forged)  # this server pins no release key: it stores any signature
        rig.set_config("device", agent.device_id, "voice.pack", forged.sha256)
        await agent.heartbeat_once()
        await wait_for(lambda: _true(any("refused" in str(d) for d in _voice(rig))))
        assert voice.clip_for(PASS, "pass") == clip and voice.pack == label  # old words
        audio = (await agent.status())["audio"]  # the stalled pack shows in the heartbeat
        assert audio["pack"] == label and audio["pack_problem"].startswith("refused: ")
    (refusal,) = [d for d in _voice(rig) if d["voice"]["pack"].startswith("refused")]
    assert "not signed by the pinned release key" in refusal["voice"]["pack"]
    assert any(d["voice"]["pack"] == f"installed {label}" for d in _voice(rig))

    async with rig.agent(server_url=dead_url()) as agent:  # a restart without the server
        assert agent._voice.pack == label
        assert agent._voice.clip_for(PASS, "pass") == clip
        assert agent._voice.clip_for("其他", "check") == agent._voice.renderer.path_for(NEW_CHECK)


def _voice(rig: Rig) -> list[dict[str, Any]]:
    return [d for d in rig.journalled("config_applied") if "voice" in d]


async def test_a_pack_the_server_cannot_give_now_is_fetched_at_a_later_heartbeat(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """429 (too many downloads under way) leaves the words as they are; a later heartbeat
    fetches the pack, though the configuration's version has not changed since."""
    pack = signed_pack(rig.key, {"pass": tone(rig.tmp / "pass.flac")})
    rig.publish(pack)
    rig.set_config("fleet", "", "voice.pack", pack.sha256)
    monkeypatch.setattr(views, "MAX_DOWNLOADS", 0)
    async with rig.agent(heartbeat_s=0.3) as agent:
        sync = agent.voice_sync
        assert sync is not None
        await wait_for(lambda: _true(sync.pending is not None))
        version = agent.config_version
        assert agent._voice.pack is None
        assert (await agent.status())["audio"]["pack_problem"].startswith("pending: ")
        monkeypatch.setattr(views, "MAX_DOWNLOADS", 4)
        await wait_for(lambda: _true(agent._voice.pack is not None))
        assert agent.config_version == version and sync.pending is None

        async def settled() -> bool:
            return "pack_problem" not in (await agent.status())["audio"]

        await wait_for(settled)  # the heartbeat no longer reports a stalled pack
        await wait_for(lambda: _true(any(d.get("retry") for d in _voice(rig))))
    (first, *_) = _voice(rig)
    assert first["voice"]["pack"].startswith("pending: ")
    (retried,) = [d for d in _voice(rig) if d.get("retry")]
    assert retried["voice"]["pack"] == f"installed test-words@{pack.sha256[:12]}"
