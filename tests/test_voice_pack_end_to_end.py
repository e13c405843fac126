"""New words for a site, from the admin's command line to the citizen's ear, with no visit:
``kiosk voice pack build`` → ``kiosk voice pack publish --site`` and ``kiosk provision config
set --site`` through the real server's admin API → the heartbeat → a running agent that
downloads, verifies against its pinned release key, installs and speaks them at the next
tap, quieter under the site's volume schedule. Edges only are fakes (pty reader, MockPlayer,
mock pins)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from core.outcomes import DEFAULT_PROMPTS
from device.acting.voice import MockPlayer
from device.acting.volume import volume_copy
from device.runtime import built_agent
from firmware_bridge.simserve import SimulatedReaderPort
from provisioning.release_api import write_key
from siheyi.cli import main
from tests.device.packkit import tone
from tests.e2e_support import (
    Fleet,
    _true,
    device_config,
    fleet,
    prompt_cache,
    reader_ready,
    sim,
    tap,
    wait_for,
)
from tests.server.users_support import PASSWORD, add_user

__all__ = ["fleet", "prompt_cache", "sim"]  # fixtures used by the tests below

NEW_CHECK_WORDS = "请走人工通道"


async def kiosk(*argv: str) -> int:
    """A ``kiosk`` command line, run as an admin would (blocking I/O: in a thread)."""
    return await asyncio.to_thread(main, list(argv))


async def test_an_admin_changes_a_sites_words_without_visiting_its_kiosks(
    tmp_path: Path,
    fleet: Fleet,
    sim: SimulatedReaderPort,
    prompt_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "admin-config"))
    monkeypatch.delenv("SIHEYI_ADMIN_PASSWORD", raising=False)
    add_user(fleet.db, "ops", "admin")
    password = tmp_path / "pw"
    password.write_text(PASSWORD + "\n", encoding="utf-8")
    login = ["--server-url", fleet.url, "--admin", "ops", "--password-file", str(password)]
    release_key = tmp_path / "release.key"
    public = write_key(release_key)

    pack = tmp_path / "site-a-words.zip"
    recorded = tone(tmp_path / "pass.flac", seconds=1.4)
    build = ["voice", "pack", "build", "--name", "site-a-words", "-o", str(pack),
             "--clip", f"pass={recorded}", "--prompt", f"check={NEW_CHECK_WORDS}"]  # fmt: skip
    assert await kiosk(*build) == 0

    config = device_config(tmp_path, sim, prompt_cache)
    config = config.with_overrides(
        heartbeat=replace(config.heartbeat, interval_s=0.3),
        update=replace(config.update, release_key=public),
    )
    player = MockPlayer()
    async with built_agent(
        config, bundle=fleet.bundle, player=player, pin_factory=MockFactory()
    ) as agent:
        await reader_ready(agent)
        voice = agent._voice
        assert voice.pack is None

        publish = ["voice", "pack", "publish", str(pack), "--key", str(release_key)]
        assert await kiosk(*publish, "--site", "site-a", *login) == 0
        night = '[{"start": "00:00", "end": "00:00", "gain_db": -12}]'  # all day, for the test
        schedule = ["provision", "config", "set", "voice.volume_schedule", night]
        assert await kiosk(*schedule, "--site", "site-a", *login) == 0

        await wait_for(lambda: _true(voice.pack is not None and voice.schedule.gains() == {-12.0}))
        assert voice.pack is not None and voice.pack.startswith("site-a-words@")
        volume_dir = voice.volume_dir
        assert volume_dir is not None

        result = await tap(agent, sim, fleet.people["pass"][0])
        assert result.decision.outcome == "pass"
        played, _, _ = player.played[-1]
        assert played == volume_copy(voice.recorded["pass"], -12.0, volume_dir)
        assert voice.recorded["pass"].is_file()  # the recording, levelled, not synthesis

        result = await tap(agent, sim, fleet.people["check"][0])
        assert result.decision.outcome == "check"
        new_words = voice.clip_for(DEFAULT_PROMPTS["check"], "check")
        assert new_words is not None and new_words == voice.clips[NEW_CHECK_WORDS]
        assert player.played[-1][0] == volume_copy(new_words, -12.0, volume_dir)
