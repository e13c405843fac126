"""The audit journal: gap-free hash chain, restart, ack, privacy guard, disk full, kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from device.errors import JournalError
from device.recording.journal import GENESIS_HASH, Journal, hash_event, verify_chain

REPO = Path(__file__).resolve().parents[2]
API_FIELDS = {
    "epoch", "seq", "wall_time", "mono_ns", "boot_id", "clock_trusted", "kind", "outcome",
    "prompt",
    "masked_id", "pseudonym", "offline", "cache_age_s", "latency_ms", "detail", "prev_hash",
    "hash",
}  # fmt: skip
CLEAR_ID = "110101199003074514"


def decision(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "decision",
        "clock_trusted": True,
        "outcome": "pass",
        "prompt": "绿码通行",
        "masked_id": "1101**********4514",
        "pseudonym": "ab" * 32,
        "offline": False,
        "cache_age_s": None,
        "latency_ms": 42.5,
        "detail": {"i": i, "reasons": []},
        **extra,
    }


def independent_hash(event: dict[str, Any]) -> str:
    """docs/api.md, written out again rather than calling the code under test."""
    body = {k: v for k, v in event.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def assert_chain(
    events: list[dict[str, Any]], first_seq: int = 1, prev: str = GENESIS_HASH
) -> None:
    assert [e["seq"] for e in events] == list(range(first_seq, first_seq + len(events)))
    for event in events:
        assert event["prev_hash"] == prev
        assert event["hash"] == independent_hash(event)
        prev = event["hash"]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = Journal(tmp_path / "journal.db", "kiosk-1", "boot-1")
    await j.open()
    yield j
    await j.close()


async def test_events_are_exactly_the_api_events_and_chained(journal: Journal) -> None:
    returned = [await journal.append(decision(i)) for i in range(5)]
    stored = await journal.pending(100)
    assert stored == returned
    assert_chain(stored)
    for event in stored:
        assert set(event) == API_FIELDS
        assert event["boot_id"] == "boot-1"
        when = datetime.fromisoformat(event["wall_time"])
        assert when.utcoffset() == timedelta(0)
        assert isinstance(event["mono_ns"], int)
        assert hash_event(event) == event["hash"]
    assert [e["mono_ns"] for e in stored] == sorted(e["mono_ns"] for e in stored)
    assert verify_chain(stored) == []
    assert stored[0]["prompt"] == "绿码通行"  # stored as UTF-8, not \\u escapes
    assert await journal.count() == 5


async def test_defaults_and_returned_copy(journal: Journal) -> None:
    event = await journal.append({"kind": "system", "clock_trusted": False})
    assert event["outcome"] is None and event["masked_id"] is None and event["detail"] == {}
    assert event["offline"] is False and event["latency_ms"] is None
    event["detail"]["tampered"] = True  # the caller's copy, not the journal's
    (stored,) = await journal.pending(10)
    assert stored["detail"] == {}
    assert stored["hash"] == independent_hash(stored)


async def test_verify_chain_finds_breaks(journal: Journal) -> None:
    for i in range(4):
        await journal.append(decision(i))
    events = await journal.pending(10)
    events[1] = {**events[1], "outcome": "check"}  # content changed, hash not
    del events[3]
    assert verify_chain(events) == [2]
    events2 = await journal.pending(10)
    assert verify_chain(events2[2:]) == [3]  # missing predecessor
    assert verify_chain(events2[2:], prev_hash=events2[1]["hash"], prev_seq=2) == []


async def test_restart_continues_sequence_after_everything_was_acked(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with Journal(path, "kiosk-1", "boot-1") as first:
        for i in range(3):
            last = await first.append(decision(i))
        assert await first.ack(3) == 3
        assert await first.count() == 0
        assert await first.pending(10) == []
    async with Journal(path, "kiosk-1", "boot-2") as second:
        assert await second.last() == (3, last["hash"])
        event = await second.append(decision(3))
    assert event["seq"] == 4
    assert event["prev_hash"] == last["hash"]
    assert event["boot_id"] == "boot-2"
    assert event["hash"] == independent_hash(event)


async def test_ack_deletes_only_up_to_acked_seq(journal: Journal) -> None:
    for i in range(6):
        await journal.append(decision(i))
    assert await journal.ack(0) == 0
    assert await journal.ack(4) == 4
    assert [e["seq"] for e in await journal.pending(100)] == [5, 6]
    assert await journal.ack(4) == 0  # resent acknowledgement is harmless
    assert await journal.count() == 2
    assert [e["seq"] for e in await journal.pending(1)] == [5]
    with pytest.raises(ValueError):
        await journal.ack("4")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        {"masked_id": CLEAR_ID},
        {"prompt": f"欢迎 {CLEAR_ID}"},
        {"detail": {"card": {"raw": [CLEAR_ID]}}},
        {"detail": {"n": int(CLEAR_ID)}},
        {"detail": {CLEAR_ID: 1}},
        {"pseudonym": "11010519491231002x"},
    ],
)
async def test_privacy_guard_rejects_clear_id_numbers(
    journal: Journal, fields: dict[str, Any]
) -> None:
    await journal.append(decision(0))
    with pytest.raises(ValueError, match="full ID number") as caught:
        await journal.append(decision(1, **fields))
    assert CLEAR_ID not in str(caught.value)  # the error itself does not leak it
    event = await journal.append(decision(2))
    assert event["seq"] == 2  # nothing stored, no sequence number consumed
    assert await journal.count() == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"seq": 9}, "set by the journal"),
        ({"hash": "x"}, "set by the journal"),
        ({"device_id": "k"}, "unknown"),
        ({"kind": "tap"}, "kind"),
        ({"clock_trusted": 1}, "clock_trusted"),
        ({"latency_ms": float("nan")}, "latency_ms"),
        ({"detail": {"t": object()}}, "JSON"),
        ({"detail": ["list"]}, "detail"),
        ({"outcome": 3}, "outcome"),
    ],
)
async def test_malformed_events_are_refused(
    journal: Journal, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await journal.append(decision(0, **fields))
    with pytest.raises(ValueError, match="required"):
        await journal.append({"kind": "fault"})
    assert await journal.count() == 0


async def test_journal_refuses_another_devices_file(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with Journal(path, "kiosk-1", "b") as j:
        await j.append(decision())
    other = Journal(path, "kiosk-2", "b")
    with pytest.raises(JournalError, match="belongs to device 'kiosk-1'"):
        await other.open()
    with pytest.raises(JournalError):
        await other.append(decision())
    await other.close()
    with pytest.raises(JournalError, match="closed"):
        await other.count()


async def test_unopenable_path_is_a_journal_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    j = Journal(tmp_path / "file" / "j.db", "kiosk-1", "b")
    with pytest.raises(JournalError, match="cannot open journal"):
        await j.open()
    await j.close()


# --------------------------------------------------------------------------- disk full

PAD = "x" * 1500  # about two events per 4 KiB page: the cap is reached quickly


async def fill_until_held(journal: Journal) -> list[dict[str, Any]]:
    """Append until the journal holds an event in memory; return every event appended."""
    events = []
    for i in range(500):
        event = await journal.append(decision(i, detail={"i": i, "pad": PAD}))
        events.append(event)
        if event["detail"].get("journal_overflow"):
            return events
    raise AssertionError("the journal never filled up")


async def server_takes_all(journal: Journal) -> int:
    """What the uploader does with a server that stores everything it is sent."""
    taken = 0
    while events := await journal.pending(500):
        epoch = events[0].get("epoch", "")
        batch = [e for e in events if e.get("epoch", "") == epoch]
        taken += await journal.ack(0, epoch, [(batch[0]["seq"], batch[-1]["seq"])])
    return taken


def small(path: Path, **kw: Any) -> Journal:
    options: dict[str, Any] = {"max_pages": 16, "reserve_bytes": 16 * 1024, "reserve_events": 3}
    return Journal(path, "kiosk-1", "boot-1", **(options | kw))


async def test_full_disk_uses_the_reserve_then_holds_events_for_the_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="device.recording.journal")
    async with small(tmp_path / "j.db") as j:
        assert (await j.state())["reserve"] == "ready"
        events = await fill_until_held(j)
        events.append(await j.append(decision(1000)))
        assert_chain(events)  # the overflow flag is covered by the hash: no break
        state = await j.state()
        assert state["full"] and state["reserve"] == "in_use" and state["held"] == 2
        assert any("living on its reserve" in r.getMessage() for r in caplog.records)
        # Held events are offered to the uploader at once, after the stored ones.
        assert await j.pending(1000) == events
        assert await j.count() == len(events)
        assert await server_takes_all(j) == len(events)
        state = await j.state()
        assert not state["full"] and state["reserve"] == "ready" and state["held"] == 0
        after = await j.append(decision(2000))
        assert "journal_overflow" not in after["detail"]
        assert after["prev_hash"] == events[-1]["hash"]
        assert await j.pending(10) == [after]


async def test_disk_frees_up_and_held_events_are_written_in_order(tmp_path: Path) -> None:
    async with small(tmp_path / "j.db") as j:
        events = await fill_until_held(j)
        stored = len(events) - 1
        assert await j.flush() == 0  # still full
        assert await j.ack(stored) == stored  # frees pages: the held event goes in
        assert j.overflow_count == 0
        assert await j.pending(10) == [events[-1]]
    async with small(tmp_path / "j.db") as again:  # it was on disk: no new epoch
        nxt = await again.append(decision(1))
        assert nxt["seq"] == events[-1]["seq"] + 1 and nxt["epoch"] == events[0]["epoch"]


async def test_held_events_never_reuse_a_number_after_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = small(tmp_path / "j.db")
    events = await fill_until_held(j)
    events.append(await j.append(decision(1000)))
    await j.close()  # the two held events die with the process
    assert any("2 events never written" in r.getMessage() for r in caplog.records)
    async with small(tmp_path / "j.db", max_pages=None) as again:
        old, new = events[0]["epoch"], await again.epoch()
        assert new != old
        pending = await again.pending(1000)
        assert pending[:-1] == events[:-2]  # what was on disk is still there, old epoch
        notice = pending[-1]
        assert (notice["epoch"], notice["seq"], notice["prev_hash"]) == (new, 1, GENESIS_HASH)
        assert notice["detail"] == {
            "event": "journal_epoch_started",
            "previous_epoch": old,
            "unconfirmed_from": events[-2]["seq"],
            "unconfirmed_to": events[-1]["seq"],
            "dropped": 0,
        }
        assert (await again.state())["lost"] == 2


async def test_held_events_the_server_took_keep_the_chain_after_a_restart(
    tmp_path: Path,
) -> None:
    j = small(tmp_path / "j.db")
    events = await fill_until_held(j)
    last = events[-1]
    assert await j.ack(0, last["epoch"], [(last["seq"], last["seq"])]) == 1  # straight in
    await j.close()
    async with small(tmp_path / "j.db") as again:
        assert await again.epoch() == last["epoch"]
        nxt = await again.append(decision(1))
        assert (nxt["seq"], nxt["prev_hash"]) == (last["seq"] + 1, last["hash"])
        assert (await again.state())["lost"] == 0


async def test_memory_bound_drops_are_counted_then_reported_in_the_chain(tmp_path: Path) -> None:
    async with small(tmp_path / "j.db", max_held=2) as j:
        events = await fill_until_held(j)
        events.append(await j.append(decision(1000)))
        dropped = [await j.append(decision(2000 + k)) for k in range(3)]
        assert [d["seq"] for d in dropped] == [None] * 3
        assert all(d["detail"]["journal_lost"] for d in dropped)
        assert (await j.state())["lost"] == 3
        await server_takes_all(j)  # the server is back
        report = await j.append(decision(3000))
        pending = await j.pending(10)
        assert [e["detail"].get("event") for e in pending] == ["events_lost", None]
        assert pending[0]["detail"]["count"] == 3 and pending[1] == report
        assert_chain(pending, pending[0]["seq"], events[-1]["hash"])


async def test_refused_event_becomes_a_dead_letter(journal: Journal) -> None:
    events = [await journal.append(decision(i)) for i in range(3)]
    await journal.dead_letter(events[1], "events[0].outcome: not one of the allowed values")
    assert [e["seq"] for e in await journal.pending(10)] == [1, 3]
    letters = await journal.dead_letters()
    assert letters == [{"event": events[1], "error": letters[0]["error"]}]
    assert (await journal.state())["dead_letters"] == 1


async def test_masked_id_must_have_the_mask_shape(journal: Journal) -> None:
    for bad in ("*", "1101*4514", "1101**********45145", "abc"):
        with pytest.raises(ValueError, match="mask's shape"):
            await journal.append(decision(0, masked_id=bad))
    assert (await journal.append(decision(0, masked_id="USA1*******0030")))["seq"] == 1


def legacy_journal(path: Path, n: int) -> list[dict[str, Any]]:
    """A journal written by the release before epochs: schema 1, events without epoch."""
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, body TEXT NOT NULL);"
    )
    prev, events = GENESIS_HASH, []
    for i in range(1, n + 1):
        event = {**decision(i), "seq": i, "wall_time": "2026-01-01T00:00:00+00:00",
                 "mono_ns": i, "boot_id": "old", "prev_hash": prev}  # fmt: skip
        event["hash"] = independent_hash(event)
        body = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        conn.execute("INSERT INTO events VALUES (?, ?, ?)", (i, event["hash"], body))
        prev = event["hash"]
        events.append(event)
    meta = {"schema_version": "1", "device_id": "kiosk-1", "last_seq": str(n), "last_hash": prev}
    conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    conn.commit()
    conn.close()
    return events


async def test_a_journal_from_before_epochs_goes_on_in_the_legacy_epoch(tmp_path: Path) -> None:
    old = legacy_journal(tmp_path / "j.db", 3)
    async with Journal(tmp_path / "j.db", "kiosk-1", "boot-2") as j:
        assert await j.epoch() == ""
        assert await j.pending(10) == old
        new = await j.append(decision(9))
        assert "epoch" not in new  # old servers hash and store it as before
        assert_chain([*old, new])


# --------------------------------------------------------------------------- kill -9

CHILD = """
import asyncio, sys
from pathlib import Path
from device.recording.journal import Journal

async def main() -> None:
    journal = Journal(Path(sys.argv[1]), "kiosk-1", sys.argv[2])
    await journal.open()
    i = 0
    while True:
        event = await journal.append(
            {"kind": "decision", "clock_trusted": True, "outcome": "pass",
             "detail": {"i": i}}
        )
        print(event["seq"], event["hash"], flush=True)
        i += 1

asyncio.run(main())
"""


async def run_and_kill(path: Path, boot_id: str, after: int) -> dict[int, str]:
    """Run a child appending forever; SIGKILL it after ``after`` appends returned."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(path), boot_id,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    confirmed: dict[int, str] = {}
    while len(confirmed) < after:
        line = await proc.stdout.readline()
        assert line, (await proc.communicate())[1].decode()
        seq, digest = line.split()
        confirmed[int(seq)] = digest.decode()
    proc.send_signal(signal.SIGKILL)  # mid-append: the child never stops appending
    rest, _ = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    for line in rest.splitlines():  # appends that returned before the kill landed
        seq, digest = line.split()
        confirmed[int(seq)] = digest.decode()
    return confirmed


@pytest.mark.slow
async def test_sigkill_loses_no_confirmed_event(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    confirmed = await run_and_kill(path, "boot-a", 40)
    confirmed |= await run_and_kill(path, "boot-b", 40)
    async with Journal(path, "kiosk-1", "boot-c") as j:
        stored = await j.pending(10_000)
        assert_chain(stored)  # gap-free from seq 1, every hash recomputed
        by_seq = {e["seq"]: e["hash"] for e in stored}
        for seq, digest in confirmed.items():
            assert by_seq[seq] == digest
        boots = [e["boot_id"] for e in stored]
        assert boots == sorted(boots) and set(boots) == {"boot-a", "boot-b"}
        nxt = await j.append(decision())
        assert nxt["seq"] == stored[-1]["seq"] + 1
        assert nxt["prev_hash"] == stored[-1]["hash"]


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill_disk(path: Path) -> None:
    """Another writer takes every free byte (as a runaway log would)."""
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
            f.flush()


async def test_real_full_filesystem_loses_nothing_and_reuses_no_number(
    tiny_filesystem: Path,
) -> None:
    path, filler = tiny_filesystem / "j.db", tiny_filesystem / "kiosk.log"
    j = Journal(path, "kiosk-1", "boot-1", reserve_events=5)
    events = [await j.append(decision(i)) for i in range(3)]
    fill_disk(filler)
    events += await fill_until_held(j)
    events.append(await j.append(decision(1000)))
    state = await j.state()
    assert state["full"] and state["reserve"] == "in_use" and state["held"] == 2
    assert_chain(events)
    taken = events[-2]  # the server takes one held event straight from memory
    assert await j.ack(0, taken["epoch"], [(taken["seq"], taken["seq"])]) == 1
    await j.close()  # the other held event dies with the process
    async with Journal(path, "kiosk-1", "boot-2") as again:  # the disk is still full
        pending = await again.pending(1000)
        assert pending[:-1] == events[:-2]
        notice = pending[-1]
        assert notice["epoch"] != events[0]["epoch"] and notice["seq"] == 1
        assert notice["detail"]["unconfirmed_from"] == notice["detail"]["unconfirmed_to"]
        assert notice["detail"]["unconfirmed_to"] == events[-1]["seq"]
        filler.unlink()  # log rotation frees the disk
        await server_takes_all(again)
        assert (await again.state())["reserve"] == "ready"
        new = await again.append(decision(1001))
        assert "journal_overflow" not in new["detail"] and new["seq"] == 2
