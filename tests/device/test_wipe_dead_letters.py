"""`kiosk device wipe` counts refused events (dead letters): wiping would lose them too."""

from __future__ import annotations

from pathlib import Path

from device.recording.journal import Journal
from device.wipe import pending_events


async def test_dead_letters_count_as_events_the_server_does_not_hold(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with Journal(path, "k-1", "boot") as journal:
        event = await journal.append({"kind": "system", "clock_trusted": True})
        await journal.dead_letter(event, "400 bad_request: events[0].detail: refused")
        assert await journal.count() == 0
    assert pending_events(path) == 1
    assert (tmp_path / "journal.db.seq").exists() and (tmp_path / "journal.db.reserve").exists()
