"""What the heartbeat tells the server's alert rules: audio health, the snapshot's age."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.acting.voice import MockPlayer, PromptRenderer, Voice
from device.deciding.cache import KioskCache
from device.errors import PlayerError

PROMPTS = {"pass": "绿码通行", "fault": "设备故障，请联系工作人员"}


async def test_voice_health_follows_the_last_attempt_to_speak(
    shared_renderer: PromptRenderer,
) -> None:
    player = MockPlayer()
    voice = Voice(shared_renderer, player, PROMPTS, play_timeout_s=0.3)
    await voice.start()
    assert voice.health() == {"ok": True, "failures": 0, "last_error": None}
    player.missing = True
    with pytest.raises(PlayerError):
        await voice.say("绿码通行", outcome="pass")
    health = voice.health()
    assert health["ok"] is False and health["failures"] == 1 and health["last_error"]
    player.missing = False
    await voice.say("绿码通行", outcome="pass")
    assert voice.health()["ok"] is True
    await voice.close()


async def test_the_cache_knows_its_snapshot_across_a_restart(tmp_path: Path) -> None:
    cache = KioskCache(tmp_path / "cache.db", max_age_s=3600)
    await cache.open()
    assert cache.snapshot_at is None
    await cache.replace_snapshot({}, 1_800_000_000.0, "k1")
    assert cache.snapshot_at == 1_800_000_000.0
    await cache.close()
    again = KioskCache(tmp_path / "cache.db", max_age_s=3600)
    await again.open()
    assert again.snapshot_at == 1_800_000_000.0
    await again.close()
