"""Evaluation in storage: two processes evaluating one rollout at once move it one step;
the heartbeat writes a kiosk's update row only when it changed."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from core.wire_releases import ReleaseUpload, RolloutRequest
from server.releases import evaluate, rollouts, store
from server.releases.waves import percentile
from server.storage.db import connect, transaction
from tests.releases.support import Client, add_kiosks, beat, tokens, upload_body

NOW = datetime.now(UTC).replace(microsecond=0)


def _setup(db: Path | str) -> tuple[int, list[str]]:
    """A running rollout of 1.5.0 in waves 50/100 whose first wave all runs it, online."""
    ids = add_kiosks(db, "site-a", 20)
    with connect(db) as conn, transaction(conn):
        store.publish(conn, store_upload(), "ops", NOW.isoformat())
        started = rollouts.start(
            conn, RolloutRequest("1.5.0", waves=[50, 100]), "ops", NOW.isoformat()
        )
        for device_id in ids:
            running = "1.5.0" if percentile(started.id, device_id) < 50 else "1.4.0"
            conn.execute(
                "INSERT INTO kiosk_updates (device_id, running, at) VALUES (?, ?, ?)",
                (device_id, running, NOW.isoformat()),
            )
        conn.execute("UPDATE devices SET last_seen_at = ?", (NOW.isoformat(),))
    return started.id, ids


def store_upload() -> ReleaseUpload:
    return msgspec.convert(upload_body("1.5.0", b"w" * 100), ReleaseUpload)


def test_concurrent_evaluations_move_a_rollout_one_wave(db_path: Path | str) -> None:
    rollout_id, _ = _setup(db_path)
    barrier = threading.Barrier(4)
    waves: list[int] = []

    def evaluate_once() -> None:
        with connect(db_path) as conn:
            barrier.wait()
            waves.append(evaluate.evaluate(conn, rollout_id, NOW).wave)

    threads = [threading.Thread(target=evaluate_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(waves) == [1, 1, 1, 1]
    with connect(db_path) as conn:
        assert rollouts.find(conn, rollout_id).wave == 1


async def test_the_update_row_is_written_only_when_it_changes(
    client: Client, admin: dict[str, str], db_path: Path | str
) -> None:
    (kiosk,) = add_kiosks(db_path, "site-a", 1)
    auth = tokens(db_path, [kiosk])[kiosk]
    trial = {"version": "1.5.0", "state": "trial"}
    await beat(client, auth, "1.5.0", trial)
    with connect(db_path) as conn:
        row = conn.execute("SELECT running, version, state FROM kiosk_updates").fetchone()
        assert tuple(row) == ("1.5.0", "1.5.0", "trial")
        conn.execute("DELETE FROM kiosk_updates")
    await beat(client, auth, "1.5.0", trial)  # the same: nothing written
    with connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM kiosk_updates").fetchone()[0] == 0
    await beat(client, auth, "1.5.0", {"version": "1.5.0", "state": "committed"})
    with connect(db_path) as conn:
        row = conn.execute("SELECT running, version, state FROM kiosk_updates").fetchone()
        assert tuple(row) == ("1.5.0", "1.5.0", "committed")
    await beat(client, auth, "1.5.0")  # no report: the last one stays
    with connect(db_path) as conn:
        assert conn.execute("SELECT state FROM kiosk_updates").fetchone()[0] == "committed"


async def test_a_nul_in_what_a_kiosk_reports_is_stored_harmlessly(
    client: Client, db_path: Path | str
) -> None:
    (kiosk,) = add_kiosks(db_path, "site-a", 1)
    auth = tokens(db_path, [kiosk])[kiosk]
    await beat(client, auth, "1.5\x00", {"version": "1\x00", "state": "failed", "detail": "a\x00"})
    with connect(db_path) as conn:
        row = conn.execute("SELECT running, version, detail FROM kiosk_updates").fetchone()
    assert tuple(row) == ("1.5\ufffd", "1\ufffd", "a\ufffd")
