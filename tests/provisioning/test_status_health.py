"""``kiosk provision status``: the health each kiosk reports (reader, journal backlog, clock)
and ``--offline`` / ``--unhealthy``, on the database and through the admin API alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from provisioning.registry import add_device
from server.storage.db import connect, transaction
from siheyi.cli import local_fleet
from tests.provisioning.test_cli import run
from tests.provisioning.test_remote import Served, served

__all__ = ["served"]  # the fixture, for pytest


def heartbeat(
    *, reader_up: bool = True, backlog: int = 0, trusted: bool = True, full: bool = False
) -> dict[str, Any]:
    """A status as device/agent.py sends it (the parts the health is made of)."""
    return {
        "boot_id": "boot-1",
        "version": "1.4.0",
        "clock_trusted": trusted,
        "journal_pending": backlog,
        "journal": {"full": full, "reserve": "ready", "held": 0, "dead_letters": 0, "lost": 0},
        "reader": {"url": "/dev/ttyUSB0", "connected": reader_up, "reads": 3},
        "circuit": {"state": "closed", "opened": 0},
    }


#: serial → (heartbeat or None for never seen, seconds since, clock skew)
KIOSKS: dict[str, tuple[dict[str, Any] | None, float, float | None]] = {
    "SN-OK": (heartbeat(), 5, 0.4),
    "SN-READER": (heartbeat(reader_up=False), 5, -0.2),
    "SN-BACKLOG": (heartbeat(backlog=812), 5, 1.0),
    "SN-CLOCK": (heartbeat(trusted=False), 5, 95.0),
    "SN-GONE": (heartbeat(full=True), 3600, 0.0),
    "SN-NEW": (None, 0, None),
}


def fleet(db: Path | str) -> None:
    """The kiosks of :data:`KIOSKS`, their last heartbeats stored as the server stores them."""
    now = datetime.now(UTC)
    for serial, (beat, ago, skew) in KIOSKS.items():
        record = add_device(local_fleet(None, db), serial, "north", "g1", server_url="http://t")
        if beat is None:
            continue
        seen = (now - timedelta(seconds=ago)).isoformat(timespec="seconds")
        with connect(db) as conn, transaction(conn):
            conn.execute(
                "UPDATE devices SET last_heartbeat = ?, last_seen_at = ?, clock_skew_s = ?"
                " WHERE device_id = ?",
                (json.dumps(beat), seen, skew, record.device_id),
            )


def status(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert run(["provision", "status", "--json", *argv]) == 0
    out = capsys.readouterr().out
    rows: list[dict[str, Any]] = json.loads(out[out.index("[") :])
    return rows


def test_health_and_filters(
    tmp_path: Path, any_database: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet(any_database)
    db = ["--database", str(any_database)]
    rows = {r["serial"]: r for r in status(capsys, *db)}
    assert rows["SN-OK"]["healthy"] and rows["SN-OK"]["reader"] == "ok"
    assert (rows["SN-OK"]["journal_backlog"], rows["SN-OK"]["clock_trusted"]) == (0, True)
    assert rows["SN-READER"]["problems"] == ["reader fault"]
    assert rows["SN-BACKLOG"]["problems"] == ["journal backlog 812"]
    assert rows["SN-CLOCK"]["problems"] == ["clock not trusted", "clock skew +95.0 s"]
    assert rows["SN-GONE"]["problems"] == ["journal full"] and not rows["SN-GONE"]["online"]
    assert rows["SN-NEW"]["healthy"] and rows["SN-NEW"]["reader"] is None
    offline = [r["serial"] for r in status(capsys, "--offline", *db)]
    assert offline == ["SN-GONE", "SN-NEW"]
    unhealthy = [r["serial"] for r in status(capsys, "--unhealthy", *db)]
    assert unhealthy == ["SN-BACKLOG", "SN-CLOCK", "SN-GONE", "SN-READER"]
    either = [r["serial"] for r in status(capsys, "--offline", "--unhealthy", *db)]
    assert either == ["SN-BACKLOG", "SN-CLOCK", "SN-GONE", "SN-NEW", "SN-READER"]
    limits = ["--unhealthy", "--backlog", "1000", "--max-skew", "100"]
    assert [r["serial"] for r in status(capsys, *limits, *db)] == [
        "SN-CLOCK",
        "SN-GONE",
        "SN-READER",
    ]


def test_the_table(
    tmp_path: Path, any_database: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet(any_database)
    assert run(["provision", "status", "--unhealthy", "--database", str(any_database)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "4 device(s): 3 online, 1 offline, 4 unhealthy"
    assert lines[2].split()[-5:] == ["VERSION", "READER", "BACKLOG", "SKEW", "PROBLEMS"]
    reader = next(line for line in lines if line.startswith("SN-READER"))
    assert reader.split()[-6:] == ["1.4.0", "fault", "0", "-0.2s", "reader", "fault"]
    clock = next(line for line in lines if line.startswith("SN-CLOCK"))
    assert clock.endswith("+95.0s  clock not trusted; clock skew +95.0 s")


def test_the_admin_api_reports_the_same(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    fleet(served.db)
    login = ["--admin", "ops", "--password-file", str(served.password_file)]
    remote = status(capsys, "--unhealthy", "--server-url", served.url, *login)
    local = status(capsys, "--unhealthy", "--database", str(served.db))
    assert remote == local and len(local) == 4
