"""The audit journal: gap-free hash chain, restart, ack, privacy guard, disk full, kill -9."""

from __future__ import annotations

import asyncio
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
    "seq", "wall_time", "mono_ns", "boot_id", "clock_trusted", "kind", "outcome", "prompt",
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


async def fill_until_overflow(journal: Journal) -> list[dict[str, Any]]:
    """Append until SQLite reports a full database; return every event appended."""
    events = []
    for i in range(500):
        event = await journal.append(decision(i, detail={"i": i, "pad": PAD}))
        events.append(event)
        if event["detail"].get("journal_overflow"):
            return events
    raise AssertionError("max_page_count never filled up")


def external_delete(path: Path, up_to: int) -> None:
    """Free pages from outside the journal, as an operator cleaning up would."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("DELETE FROM events WHERE seq <= ?", (up_to,))
    finally:
        conn.close()


@pytest.fixture
async def small_journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = Journal(tmp_path / "small.db", "kiosk-1", "boot-1", max_pages=16)
    await j.open()
    yield j
    await j.close()


async def test_disk_full_holds_events_in_memory_then_ack_writes_them_in_order(
    small_journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    j = small_journal
    caplog.set_level(logging.WARNING, logger="device.recording.journal")
    events = await fill_until_overflow(j)
    stored_before = len(events) - 1
    events += [await j.append(decision(1000 + k, detail={"k": k})) for k in range(2)]
    held = events[stored_before:]
    assert all(e["detail"]["journal_overflow"] is True for e in held)
    assert_chain(events)  # the flag is covered by the hash, the chain is unbroken
    assert j.overflow_count == 3
    assert await j.count() == stored_before + 3
    pending = await j.pending(1000)
    assert [e["seq"] for e in pending] == list(range(1, stored_before + 1))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "database or disk is full" in errors[0].getMessage()

    assert await j.ack(stored_before) == stored_before  # frees pages: held events go in
    assert j.overflow_count == 0
    pending = await j.pending(1000)
    assert pending == held
    assert_chain(pending, first_seq=stored_before + 1, prev=events[stored_before - 1]["hash"])
    after = await j.append(decision(2000))
    assert "journal_overflow" not in after["detail"]
    assert after["prev_hash"] == held[-1]["hash"]
    assert any("writable again" in r.getMessage() for r in caplog.records)


async def test_disk_full_recovers_on_next_append(small_journal: Journal, tmp_path: Path) -> None:
    j = small_journal
    events = await fill_until_overflow(j)
    external_delete(tmp_path / "small.db", len(events) - 3)
    new = await j.append(decision(999))
    assert "journal_overflow" not in new["detail"]
    assert j.overflow_count == 0
    pending = await j.pending(1000)
    assert [e["seq"] for e in pending] == [
        len(events) - 2,
        len(events) - 1,
        len(events),
        new["seq"],
    ]
    assert pending[-2] == events[-1] and pending[-2]["detail"]["journal_overflow"] is True
    assert_chain(pending, first_seq=len(events) - 2, prev=events[-4]["hash"])


async def test_flush_writes_held_events(small_journal: Journal, tmp_path: Path) -> None:
    j = small_journal
    events = await fill_until_overflow(j)
    assert await j.flush() == 0  # still full
    assert j.overflow_count == 1
    external_delete(tmp_path / "small.db", len(events) - 1)
    assert await j.flush() == 1
    assert await j.flush() == 0
    assert await j.pending(10) == [events[-1]]


async def test_held_events_survive_until_close_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = Journal(tmp_path / "c.db", "kiosk-1", "b", max_pages=16)
    events = await fill_until_overflow(j)
    await j.close()
    assert any(
        f"1 events never written (seq {events[-1]['seq']}" in r.getMessage() for r in caplog.records
    )


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
    """A real 256 KiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


async def test_real_full_filesystem_then_space_returns(tiny_filesystem: Path) -> None:
    filler = tiny_filesystem / "kiosk.log"  # another writer fills the disk...
    filler.write_bytes(b"\0" * 96 * 1024)
    async with Journal(tiny_filesystem / "j.db", "kiosk-1", "boot-1") as j:
        events = await fill_until_overflow(j)
        events.append(await j.append(decision(1000)))
        assert [e["detail"].get("journal_overflow") for e in events[-2:]] == [True, True]
        assert j.overflow_count == 2
        filler.unlink()  # ... and log rotation frees space again
        new = await j.append(decision(1001))
        assert "journal_overflow" not in new["detail"] and j.overflow_count == 0
        stored = await j.pending(1000)
        assert stored == [*events, new]
        assert_chain(stored)
