"""The channel's storage on both backends: links of dead processes are swept, a linked kiosk
is never announced down by the heartbeat rule, commands wait for the heartbeat fallback only
until they expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.commands import SignedCommand
from provisioning.registry import DeviceBundle
from server.commands import links
from server.events import presence
from server.fleet.devices import record_heartbeat
from server.storage.db import connect

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_a_dead_processes_links_go_stale_and_are_swept(
    db_path: Path | str, device: DeviceBundle
) -> None:
    with connect(db_path) as conn:
        assert links.link_up(conn, device.device_id, "dead", "l-1", NOW) is False
        assert links.linked(conn, NOW) == {device.device_id}
        later = NOW + timedelta(seconds=links.STALE_S + 1)
        assert links.linked(conn, later) == set()  # not refreshed: not trusted any more
        assert not presence.kiosk_online(conn, device.device_id, later)
        assert links.refresh_links(conn, "alive", later) == [device.device_id]
        assert links.refresh_links(conn, "alive", later) == []


def test_a_linked_kiosk_with_old_heartbeats_is_not_announced_down(
    db_path: Path | str, device: DeviceBundle
) -> None:
    old = presence.iso(NOW - timedelta(seconds=presence.DOWN_AFTER_S + 5))
    with connect(db_path) as conn:
        record_heartbeat(conn, device.device_id, "{}", old)
        links.link_up(conn, device.device_id, "p", "l-1", NOW)
        assert presence.newly_down(conn, NOW) == []
        assert presence.online_devices(conn, NOW) == {device.device_id}
        assert links.link_down(conn, device.device_id, "l-1", NOW) is True
        assert presence.online_devices(conn, NOW) == set()
        assert presence.newly_down(conn, NOW) == []  # announced once, by the close
        assert links.link_up(conn, device.device_id, "p", "l-2", NOW) is True  # back


def test_the_close_of_a_replaced_link_marks_nothing_down(
    db_path: Path | str, device: DeviceBundle
) -> None:
    with connect(db_path) as conn:
        links.link_up(conn, device.device_id, "p1", "old", NOW)
        links.link_up(conn, device.device_id, "p2", "new", NOW)  # reconnected elsewhere
        assert links.link_down(conn, device.device_id, "old", NOW) is False
        assert links.linked(conn, NOW) == {device.device_id}


def test_unacknowledged_commands_wait_for_the_heartbeat_until_they_expire(
    db_path: Path | str, device: DeviceBundle
) -> None:
    start = int(NOW.timestamp())
    cmd = SignedCommand("c-1", device.device_id, "speak_test", {"by": "gina"}, start, start + 10)
    with connect(db_path) as conn:
        links.record_command(conn, cmd, "gina", None)
        assert [c["id"] for c in links.pending_commands(conn, device.device_id, start + 5)] == [
            "c-1"
        ]
        assert links.pending_commands(conn, device.device_id, start + 11) == []
        assert links.record_ack(conn, "c-1", "someone-else", True, "", "t") is None
        assert links.record_ack(conn, "c-1", device.device_id, True, "", "t") == (
            "speak_test",
            "gina",
        )
        assert links.record_ack(conn, "c-1", device.device_id, True, "", "t") is None
        assert links.pending_commands(conn, device.device_id, start + 5) == []
