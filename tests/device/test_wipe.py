"""A retired kiosk's data is wiped by one command, and not while events are unsent."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.config import DeviceConfig
from device.recording.journal import Journal
from siheyi.cli import main


async def test_wipe_refuses_unsent_events_then_removes_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    bundle = tmp_path / "bundle.json"
    bundle.write_text("{}")
    (state / "prompts").mkdir(parents=True)
    (state / "prompts" / "x.wav").write_bytes(b"RIFF")
    (state / "cache.db").write_bytes(b"")
    config = tmp_path / "kiosk.toml"
    config.write_text(f'bundle = "{bundle}"\nstate_dir = "{state}"\n')
    async with Journal(state / "journal.db", "k-1", "boot") as journal:
        await journal.append({"kind": "system", "clock_trusted": True})

    assert main(["device", "wipe", "--config", str(config)]) == 2
    assert "1 events not yet uploaded" in capsys.readouterr().err
    assert (state / "journal.db").exists() and bundle.exists()

    assert main(["device", "wipe", "--config", str(config), "--force"]) == 0
    assert not bundle.exists() and not (state / "prompts").exists()
    assert not any(p.name.startswith(("journal.db", "cache.db")) for p in state.iterdir())
    assert DeviceConfig.load(config).state_dir == str(state)  # the config itself stays
