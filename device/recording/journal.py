"""The kiosk's audit journal: a per-device, hash-chained event log in SQLite.

DESIGN.md "Audit log": every tap, decision, guard action and fault becomes one event that is
never lost and never duplicated, even if the process is killed at any moment. Hence:

* SQLite in WAL mode with ``synchronous=FULL``: once :meth:`Journal.append` returns, the
  event survives a power cut or ``kill -9``.
* the event, its sequence number and the chain head (``meta`` table) are written in one
  transaction, so a crash leaves either all or none of them; the sequence continues across
  restarts even after every row was acknowledged and deleted.
* events are keyed by (epoch, seq): the epoch is a random id made with the journal, so a new
  SD card, a wipe or a demo never collides with the kiosk's past on the server (issue 10,
  part 3). A journal made before epochs keeps the legacy epoch ``""``: its events carry no
  ``epoch`` field, so old and new servers read them alike.
* one connection, used only from one dedicated worker thread: sqlite blocks, and the event
  loop must stay free for the three-second promise.

A full disk (issue 10, part 2) degrades in steps, and the caller never sees an exception:
the WAL is rewound; then the space reserve (``journalfiles.SpaceReserve``) is given up and
at most ``reserve_events`` more events are written into it; then events are held in memory,
flagged ``detail.journal_overflow``, offered to the uploader at once (so a reachable server
acknowledges them straight away) and written in order when the disk takes writes again. A
held event's number is first recorded in the sequence floor file, so a restart never hands
it out again: if it may have died with the process, the journal starts a new epoch whose
first event says which numbers of the old one were never confirmed. Only when disk, memory
bound and server are all gone is an event dropped, without a number; the drops are counted
and the next event that can be kept is a ``system`` event reporting them. An event the
server refuses (400) is moved to ``dead_letters`` rather than blocking the rest.

The events are exactly the ``POST /v1/audit`` events of docs/api.md; :func:`hash_event` is
the canonical hash the server recomputes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from core import audit
from core.audit import GENESIS_HASH, hash_event
from core.canonical import canonical_json
from core.idnumbers import find_clear_ids, is_masked_id
from device.errors import JournalError, JournalFull
from device.recording.journalfiles import Floor, SeqFloor, SpaceReserve

__all__ = [
    "GENESIS_HASH",
    "Journal",
    "hash_event",
    "verify_chain",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The epoch of a journal made before epochs existed: its events carry no ``epoch`` field.
LEGACY_EPOCH: Final = ""

# Fields the caller supplies: the required ones, and the others with their defaults
# (``detail`` defaults to a fresh empty object).
_REQUIRED_FIELDS: Final = ("kind", "clock_trusted")
_OPTIONAL_FIELDS: Final[dict[str, Any]] = {
    "outcome": None,
    "prompt": None,
    "masked_id": None,
    "pseudonym": None,
    "offline": False,
    "cache_age_s": None,
    "latency_ms": None,
}
_CALLER_FIELDS: Final = frozenset((*_REQUIRED_FIELDS, *_OPTIONAL_FIELDS, "detail"))
# Fields only the journal sets.
_JOURNAL_FIELDS: Final = frozenset(
    {"epoch", "seq", "wall_time", "mono_ns", "boot_id", "prev_hash", "hash"}
)

_TABLES: Final = (
    """CREATE TABLE IF NOT EXISTS events (
        id    INTEGER PRIMARY KEY,  -- append order, across epochs
        epoch TEXT NOT NULL,
        seq   INTEGER NOT NULL,
        hash  TEXT NOT NULL,
        body  TEXT NOT NULL,        -- the event exactly as uploaded, canonical JSON
        UNIQUE (epoch, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id    INTEGER PRIMARY KEY,
        epoch TEXT NOT NULL,
        seq   INTEGER NOT NULL,
        body  TEXT NOT NULL,
        error TEXT NOT NULL,
        at    TEXT NOT NULL
    )""",
)
_SCHEMA_VERSION: Final = "2"
_PAGE_SIZE: Final = 4096


def verify_chain(
    events: Sequence[Mapping[str, Any]], prev_hash: str = GENESIS_HASH, prev_seq: int = 0
) -> list[int]:
    """Sequence numbers at which ``events`` break the chain (bad hash, link or gap).

    ``prev_hash``/``prev_seq`` describe the event just before the first one given; the
    defaults mean "starts at the beginning of the epoch".
    """
    breaks: list[int] = []
    for event in events:
        seq = int(event["seq"])
        if (
            seq != prev_seq + 1
            or event["prev_hash"] != prev_hash
            or hash_event(event) != event["hash"]
        ):
            breaks.append(seq)
        prev_seq, prev_hash = seq, str(event["hash"])
    return breaks


def event_epoch(event: Mapping[str, Any]) -> str:
    """The journal epoch an event belongs to (absent: the legacy epoch)."""
    return str(event.get("epoch", LEGACY_EPOCH))


def _wall_time() -> str:
    """ISO 8601 UTC wall time with offset and microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _build_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validate caller fields and fill defaults; ValueError names the offending field.

    Validation happens on the caller's side of the executor so that a bad event is a
    programming error reported at once, never something written or held in memory.
    """
    set_by_journal = sorted(_JOURNAL_FIELDS.intersection(fields))
    if set_by_journal:
        raise ValueError(f"fields set by the journal, not the caller: {set_by_journal}")
    unknown = sorted(set(fields) - _CALLER_FIELDS)
    if unknown:
        raise ValueError(f"unknown audit event fields: {unknown} (see docs/api.md)")
    missing = [name for name in _REQUIRED_FIELDS if name not in fields]
    if missing:
        raise ValueError(f"audit event fields required: {missing}")
    out: dict[str, Any] = {**_OPTIONAL_FIELDS, "detail": {}, **fields}
    _check_types(out)
    if not isinstance(out["detail"], Mapping):
        raise ValueError(f"detail must be an object, not {type(out['detail']).__name__}")
    try:
        # Round trip: a private copy, JSON-only types, no NaN (the canonical form must be
        # valid JSON so that any server can recompute the hash).
        out["detail"] = json.loads(json.dumps(out["detail"], allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"detail is not JSON-serialisable: {exc}") from None
    _check_privacy(out)
    return out


def _check_types(out: Mapping[str, Any]) -> None:
    if out["kind"] not in audit.KINDS:
        raise ValueError(f"kind must be one of {sorted(audit.KINDS)}, not {out['kind']!r}")
    for name in ("clock_trusted", "offline"):
        if not isinstance(out[name], bool):
            raise ValueError(f"{name} must be a bool, not {out[name]!r}")
    for name in ("outcome", "prompt", "masked_id", "pseudonym"):
        if out[name] is not None and not isinstance(out[name], str):
            raise ValueError(f"{name} must be a string or None, not {type(out[name]).__name__}")
    for name in ("cache_age_s", "latency_ms"):
        value = out[name]
        if value is not None and not (_is_number(value) and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number or None, not {value!r}")


def _check_privacy(out: Mapping[str, Any]) -> None:
    """The server's own rules (core.idnumbers), so an event it would refuse is never kept."""
    leaked = find_clear_ids(out, audit.COUNTER_FIELDS)
    if leaked:
        where = ", ".join(f"{path or 'event'}: {masked}" for path, masked in leaked)
        raise ValueError(
            f"refusing to journal a full ID number ({where}): store masked_id and pseudonym only"
        )
    if out["masked_id"] is not None and not is_masked_id(out["masked_id"]):
        raise ValueError("masked_id must have the mask's shape (1101**********4514)")


def _in_ranges(seq: int, acked_seq: int, ranges: Iterable[tuple[int, int]]) -> bool:
    return seq <= acked_seq or any(first <= seq <= last for first, last in ranges)


class Journal:
    """Durable, hash-chained audit events of one device, uploaded and acknowledged in order.

    All methods but the constructor are coroutines; the database work runs on one worker
    thread owned by the journal. The database is opened by the first call (or explicitly
    by :meth:`open`, which the agent should await at start-up to fail early).

    ``max_pages`` caps the database size (``PRAGMA max_page_count``), so the journal cannot
    fill the SD card other parts of the system need; hitting the cap behaves exactly like a
    full disk. ``reserve_bytes`` is held back (a file beside the database) for a full disk,
    good for ``reserve_events`` more events; ``max_held`` bounds the events kept in memory.
    """

    def __init__(
        self,
        path: Path,
        device_id: str,
        boot_id: str,
        *,
        max_pages: int | None = None,
        reserve_bytes: int = 256 * 1024,
        reserve_events: int = 64,
        max_held: int = 2000,
    ) -> None:
        if not device_id or not boot_id:
            raise ValueError("device_id and boot_id must be non-empty")
        self.path = Path(path)
        self.device_id = device_id
        self.boot_id = boot_id
        self.max_pages = max_pages
        self.reserve_events = reserve_events
        self.max_held = max_held
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._closed = False
        self._floor = SeqFloor(self.path.with_name(self.path.name + ".seq"))
        self._reserve = SpaceReserve(
            self.path.with_name(self.path.name + ".reserve"), reserve_bytes
        )
        # Owned by the worker thread from here on.
        self._conn: sqlite3.Connection | None = None
        self._open_error: JournalError | None = None
        self._epoch = LEGACY_EPOCH
        self._last_seq = 0
        self._last_hash = GENESIS_HASH
        self._stored = 0  # rows in events
        self._held: list[dict[str, Any]] = []
        self._dead_held: list[tuple[dict[str, Any], str]] = []
        self._dropped = 0  # events lost without a number, not yet reported in the chain
        self._lost = 0  # events lost or possibly lost, since this journal was opened
        self._reserve_cap: int | None = None  # rows allowed while living on the reserve
        self._full_logged = False
        self._lock = threading.Lock()  # guards the counter read from the loop
        self._held_len = 0

    # ----------------------------------------------------------------- public API

    async def open(self) -> None:
        """Open (or create) the database now; JournalError if it cannot be used."""
        await self._run(lambda: None)

    async def append(self, event_fields: Mapping[str, Any]) -> dict[str, Any]:
        """Record one event and return it exactly as it will be uploaded.

        ``event_fields`` are the caller's fields of docs/api.md (``kind`` and
        ``clock_trusted`` required; ``outcome``, ``prompt``, ``masked_id``, ``pseudonym``,
        ``cache_age_s``, ``latency_ms`` default to None, ``offline`` to False, ``detail``
        to ``{}``). The journal sets ``epoch``, ``seq``, ``wall_time``, ``mono_ns``,
        ``boot_id``, ``prev_hash`` and ``hash``. ValueError for a malformed event or one
        containing a full ID number. When the database cannot be written the event is held
        in memory and returned with ``detail["journal_overflow"] = True``; when memory is
        full too it is dropped, counted, and returned with ``seq`` None.
        """
        fields = _build_fields(event_fields)
        wall_time, mono_ns = _wall_time(), time.monotonic_ns()
        return await self._run(lambda: self._append_sync(fields, wall_time, mono_ns))

    async def pending(self, limit: int = 500) -> list[dict[str, Any]]:
        """Up to ``limit`` unacknowledged events, oldest first: stored ones, then held ones.

        Held events are offered too, so that a reachable server acknowledges what the disk
        cannot take; their numbers are in the sequence floor, so a restart never reuses them.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        return await self._run(lambda: self._pending_sync(limit))

    async def ack(
        self, acked_seq: int, epoch: str | None = None, held: Sequence[tuple[int, int]] = ()
    ) -> int:
        """Forget the events of ``epoch`` (default: the current one) that the server holds:
        ``seq <= acked_seq`` or within one of the ``held`` ``(first, last)`` ranges.

        Returns how many were forgotten. Freed space is used at once to write events held
        in memory. JournalFull or JournalError if the deletion itself fails (the events are
        then simply uploaded again, which the server counts as duplicates).
        """
        return await self._run(lambda: self._ack_sync(acked_seq, epoch, held))

    async def dead_letter(self, event: Mapping[str, Any], error: str) -> None:
        """Move an event the server refused out of the upload queue, keeping it on disk."""
        await self._run(lambda: self._dead_letter_sync(event, error))

    async def dead_letters(self) -> list[dict[str, Any]]:
        """The refused events with their errors: ``{"event": …, "error": …}``, oldest first."""
        return await self._run(self._dead_letters_sync)

    async def count(self) -> int:
        """Events not yet acknowledged: on disk plus held in memory (heartbeat's pending)."""
        return await self._run(lambda: self._stored + len(self._held))

    async def state(self) -> dict[str, Any]:
        """The journal's health for the heartbeat (docs/api.md ``journal``)."""
        return await self._run(self._state_sync)

    async def flush(self) -> int:
        """Try to write events held in memory; return how many were written."""
        return await self._run(self._flush_sync)

    def holds(self, seq: int) -> bool:
        """Whether event ``seq`` of the current epoch is only in memory (not yet durable)."""
        with self._lock:
            return any(e["seq"] == seq for e in self._held)

    @property
    def overflow_count(self) -> int:
        """Events currently held in memory because the database refused them."""
        with self._lock:
            return self._held_len

    async def last(self) -> tuple[int, str]:
        """``(seq, hash)`` of the newest event of the current epoch (``(0, GENESIS_HASH)``)."""
        return await self._run(lambda: (self._last_seq, self._last_hash))

    async def epoch(self) -> str:
        """The current journal epoch (``""``: a journal made before epochs)."""
        return await self._run(lambda: self._epoch)

    async def close(self) -> None:
        """Write what can be written, close the database and stop the worker thread.

        Events still held in memory at this point are in the sequence floor: the next
        start reports them (and starts a new epoch) unless the server acknowledged them.
        """
        if self._closed:
            return
        try:
            await self._run(self._close_sync, open_db=False)
        finally:
            self._closed = True
            self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Journal:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- opening

    async def _run(self, fn: Callable[[], _T], *, open_db: bool = True) -> _T:
        if self._closed:
            raise JournalError("journal is closed")
        loop = asyncio.get_running_loop()

        def job() -> _T:
            if open_db:
                self._ensure_open()
            return fn()

        return await loop.run_in_executor(self._executor, job)

    def _ensure_open(self) -> None:
        if self._conn is not None:
            return
        if self._open_error is not None:
            raise self._open_error
        conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit BEGIN IMMEDIATE ... COMMIT.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            meta = self._prepare(conn)
            self._epoch = meta["epoch"]
            self._last_seq = int(meta["last_seq"])
            self._last_hash = meta["last_hash"]
            (self._stored,) = conn.execute("SELECT count(*) FROM events").fetchone()
        except JournalError as exc:
            if conn is not None:
                conn.close()
            self._open_error = exc
            raise
        except (sqlite3.Error, OSError, KeyError, ValueError) as exc:
            if conn is not None:
                conn.close()
            self._open_error = JournalError(f"cannot open journal {self.path}: {exc}")
            raise self._open_error from exc
        self._conn = conn
        self._side_files()
        self._resume(self._floor.read())

    def _prepare(self, conn: sqlite3.Connection) -> dict[str, str]:
        """Configure the connection; create, check or migrate the schema; return ``meta``."""
        # Incremental vacuum lets a capped journal give pages back after a full spell; it
        # must be chosen before the first table exists (a no-op on an existing file).
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"journal {self.path}: cannot use WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        # A small WAL: on a 2 MB file system the default (1000 pages) is the whole disk.
        conn.execute("PRAGMA wal_autocheckpoint=100")
        if self.max_pages is not None:
            conn.execute(f"PRAGMA max_page_count={int(self.max_pages)}")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta and meta.get("device_id") != self.device_id:
            raise JournalError(
                f"journal {self.path} belongs to device {meta.get('device_id')!r}, "
                f"not {self.device_id!r}: refusing to mix two hash chains"
            )
        if not meta:
            self._create(conn)
        elif meta.get("schema_version") == "1":
            self._migrate_v1(conn)
        elif meta.get("schema_version") != _SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path}: unsupported schema version {meta.get('schema_version')!r}"
            )
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())

    def _create(self, conn: sqlite3.Connection) -> None:
        """A new journal: a new epoch, so it can never collide with the kiosk's past."""
        with _transaction(conn):
            for statement in _TABLES:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)",
                [
                    ("schema_version", _SCHEMA_VERSION),
                    ("device_id", self.device_id),
                    ("epoch", secrets.token_hex(16)),
                    ("last_seq", "0"),
                    ("last_hash", GENESIS_HASH),
                ],
            )
        try:
            self._floor.create(fresh=True)
        except OSError as exc:  # made again by _side_files; a stale record only costs an epoch
            log.error("journal sequence floor %s not reset: %s", self._floor.path, exc)

    def _migrate_v1(self, conn: sqlite3.Connection) -> None:
        """A journal from before epochs: keep its chain going as the legacy epoch ``""``.

        Its events carry no ``epoch`` field and their hashes stay valid, so both old and
        new servers take them and the chain goes on without a break.
        """
        with _transaction(conn):
            conn.execute("ALTER TABLE events RENAME TO events_v1")
            for statement in _TABLES:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO events (epoch, seq, hash, body)"
                " SELECT '', seq, hash, body FROM events_v1 ORDER BY seq"
            )
            conn.execute("DROP TABLE events_v1")
            conn.execute("INSERT INTO meta(key, value) VALUES ('epoch', '')")
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (_SCHEMA_VERSION,)
            )
        log.info("journal %s upgraded to schema %s (legacy epoch)", self.path, _SCHEMA_VERSION)

    def _side_files(self) -> None:
        """Make the floor and the reserve if missing (both are best effort: a full disk at
        start-up must not stop the kiosk)."""
        try:
            self._floor.create()
        except OSError as exc:
            log.error("journal sequence floor %s cannot be made: %s", self._floor.path, exc)
        if self._reserve.size > 0 and not self._reserve.make():
            self._enter_reserve("no space for the reserve at start-up")

    def _resume(self, floor: Floor | None) -> None:
        """Continue after the numbers the floor says were handed out, never reusing one."""
        if floor is None:
            return
        same = floor.epoch == self._epoch
        if same and floor.seq <= self._last_seq:
            self._dropped = floor.dropped  # held events were written; drops may be unreported
            return
        confirmed = max(floor.confirmed, self._last_seq) if same else floor.confirmed
        if confirmed >= floor.seq:
            # Every held event reached the server: the chain goes on from the last of them.
            self._epoch, self._last_seq, self._last_hash = floor.epoch, floor.seq, floor.hash
            self._dropped = floor.dropped
            self._save_head()
            return
        self._start_epoch(floor, confirmed + 1)

    def _start_epoch(self, floor: Floor, first_unconfirmed: int) -> None:
        """Numbers ``first_unconfirmed..floor.seq`` may have died with the process: carry on
        in a new epoch, whose first event says so (the server counts what it lacks)."""
        previous = floor.epoch
        self._epoch, self._last_seq, self._last_hash = secrets.token_hex(16), 0, GENESIS_HASH
        possibly_lost = floor.seq - first_unconfirmed + 1
        self._lost += possibly_lost + floor.dropped
        log.error(
            "journal %s: events %d..%d of epoch %r were held in memory when the kiosk stopped;"
            " starting epoch %s",
            self.path, first_unconfirmed, floor.seq, previous, self._epoch,
        )  # fmt: skip
        self._write_floor()
        self._save_head()
        detail = {
            "event": "journal_epoch_started",
            "previous_epoch": previous,
            "unconfirmed_from": first_unconfirmed,
            "unconfirmed_to": floor.seq,
            "dropped": floor.dropped,
        }
        fields = _build_fields({"kind": "system", "clock_trusted": False, "detail": detail})
        self._append_sync(fields, _wall_time(), time.monotonic_ns())

    def _save_head(self) -> None:
        """Persist the chain head chosen at start-up; if the disk refuses, the floor file
        still holds it and the next start decides the same."""
        assert self._conn is not None
        try:
            with _transaction(self._conn):
                self._conn.executemany(
                    "UPDATE meta SET value = ? WHERE key = ?",
                    [
                        (self._epoch, "epoch"),
                        (str(self._last_seq), "last_seq"),
                        (self._last_hash, "last_hash"),
                    ],
                )
        except (sqlite3.Error, OSError) as exc:
            log.error("journal %s: chain head not saved (%s)", self.path, exc)

    # ----------------------------------------------------------------- appending

    def _append_sync(self, fields: dict[str, Any], wall_time: str, mono_ns: int) -> dict[str, Any]:
        if self._dropped and len(self._held) + 1 < self.max_held:
            self._report_dropped(wall_time, mono_ns)
        if len(self._held) >= self.max_held:
            return self._drop(fields, wall_time, mono_ns)
        event = self._new_event(fields, wall_time, mono_ns)
        self._keep(event)
        copy: dict[str, Any] = json.loads(canonical_json(event))  # the caller's own copy
        return copy

    def _new_event(self, fields: dict[str, Any], wall_time: str, mono_ns: int) -> dict[str, Any]:
        event: dict[str, Any] = dict(fields)
        if self._epoch != LEGACY_EPOCH:
            event["epoch"] = self._epoch
        event.update(
            seq=self._last_seq + 1,
            wall_time=wall_time,
            mono_ns=mono_ns,
            boot_id=self.boot_id,
            prev_hash=self._last_hash,
        )
        event["hash"] = hash_event(event)
        return event

    def _keep(self, event: dict[str, Any]) -> None:
        """On disk if possible (after older held events), else held in memory."""
        if self._store([*self._held, event]):
            self._recovered()
        else:
            # The flag is part of the hashed content: the audit trail itself shows that
            # this event lived only in memory for a while.
            event["detail"] = {**event["detail"], "journal_overflow": True}
            event["hash"] = hash_event(event)
            self._hold(event)
        self._last_seq, self._last_hash = event["seq"], event["hash"]

    def _store(self, events: list[dict[str, Any]]) -> bool:
        """Write ``events``, making room step by step; False when the disk cannot take them."""
        error: BaseException | None = None
        for make_room in (None, self._rewind_wal, self._use_reserve):
            if make_room is not None and not make_room():
                continue
            if not self._disk_allows(len(events)):
                return False
            try:
                self._write(events)
            except sqlite3.IntegrityError as exc:
                raise JournalError(f"journal {self.path} is inconsistent: {exc}") from exc
            except (sqlite3.Error, OSError) as exc:
                error = exc
            else:
                return True
        if not self._full_logged:
            self._full_logged = True
            log.error(
                "journal %s cannot be written (%s); holding events in memory from seq %d",
                self.path, error, events[0]["seq"],
            )  # fmt: skip
        return False

    def _rewind_wal(self) -> bool:
        """Let the next commit reuse the WAL from its start instead of growing it."""
        assert self._conn is not None
        try:
            self._conn.execute("PRAGMA wal_checkpoint(RESTART)")
        except sqlite3.Error:
            return False
        return True

    def _use_reserve(self) -> bool:
        """Give up the reserve: room for ``reserve_events`` more events (and the deletes of
        acknowledged ones), reported as "journal full" until the reserve is made again."""
        if self._reserve_cap is not None or self._reserve.size <= 0:
            return False
        self._reserve.release()
        self._enter_reserve("the disk is full")
        return True

    def _enter_reserve(self, why: str) -> None:
        assert self._conn is not None
        self._reserve_cap = self._stored + self.reserve_events
        if self.max_pages is not None:
            extra = max(1, self._reserve.size // _PAGE_SIZE)
            self._conn.execute(f"PRAGMA max_page_count={int(self.max_pages) + extra}")
        log.warning(
            "journal %s is living on its reserve (%s): %d more events, then memory",
            self.path, why, self.reserve_events,
        )  # fmt: skip

    def _disk_allows(self, n: int) -> bool:
        return self._reserve_cap is None or self._stored + n <= self._reserve_cap

    def _write(self, events: list[dict[str, Any]]) -> None:
        """Insert ``events`` and move the chain head, atomically."""
        assert self._conn is not None
        conn = self._conn
        with _transaction(conn):
            conn.executemany(
                "INSERT INTO events(epoch, seq, hash, body) VALUES (?, ?, ?, ?)",
                [
                    (event_epoch(e), e["seq"], e["hash"], canonical_json(e).decode("utf-8"))
                    for e in events
                ],
            )
            last = events[-1]
            conn.executemany(
                "UPDATE meta SET value = ? WHERE key = ?",
                [(event_epoch(last), "epoch"), (str(last["seq"]), "last_seq"),
                 (last["hash"], "last_hash")],
            )  # fmt: skip
        self._stored += len(events)

    def _hold(self, event: dict[str, Any]) -> None:
        """Keep ``event`` in memory, its number recorded first so no restart reuses it."""
        self._held.append(event)
        with self._lock:
            self._held_len = len(self._held)
        self._write_floor(event)

    def _write_floor(self, newest: Mapping[str, Any] | None = None) -> None:
        seq = int(newest["seq"]) if newest else self._last_seq
        digest = str(newest["hash"]) if newest else self._last_hash
        confirmed = self._held[0]["seq"] - 1 if self._held else seq
        try:
            self._floor.write(Floor(self._epoch, seq, digest, confirmed, self._dropped))
        except OSError as exc:
            log.error("journal sequence floor %s not written: %s", self._floor.path, exc)

    def _drop(self, fields: dict[str, Any], wall_time: str, mono_ns: int) -> dict[str, Any]:
        """Disk, memory bound and server all gone: the event is lost, but counted."""
        self._dropped += 1
        self._lost += 1
        newest = self._held[-1] if self._held else None
        self._write_floor(newest)
        if self._dropped == 1:
            log.error("journal %s: disk and memory full, server away: events are lost", self.path)
        detail = {**fields["detail"], "journal_lost": True}
        return {**fields, "detail": detail, "seq": None, "wall_time": wall_time,
                "mono_ns": mono_ns, "boot_id": self.boot_id}  # fmt: skip

    def _report_dropped(self, wall_time: str, mono_ns: int) -> None:
        """The first event kept after drops says how many were lost, inside the chain."""
        detail = {"event": "events_lost", "count": self._dropped}
        fields = _build_fields({"kind": "system", "clock_trusted": False, "detail": detail})
        log.error("journal %s: %d events were lost; reported", self.path, self._dropped)
        self._dropped = 0
        self._keep(self._new_event(fields, wall_time, mono_ns))
        self._write_floor(self._held[-1] if self._held else None)

    def _recovered(self) -> None:
        if self._held:
            log.warning(
                "journal %s writable again: wrote %d events held in memory",
                self.path,
                len(self._held),
            )
        self._held.clear()
        self._full_logged = False
        with self._lock:
            self._held_len = 0

    def _flush_sync(self) -> int:
        self._write_dead_held()
        if not self._held:
            return 0
        n = len(self._held)
        if not self._store(list(self._held)):
            return 0
        self._recovered()
        return n

    # ----------------------------------------------------------------- upload side

    def _pending_sync(self, limit: int) -> list[dict[str, Any]]:
        assert self._conn is not None
        try:
            rows = self._conn.execute(
                "SELECT body FROM events ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        events = [json.loads(body) for (body,) in rows]
        return events + [json.loads(canonical_json(e)) for e in self._held[: limit - len(events)]]

    def _ack_sync(
        self, acked_seq: int, epoch: str | None, ranges: Sequence[tuple[int, int]]
    ) -> int:
        assert self._conn is not None
        if isinstance(acked_seq, bool) or not isinstance(acked_seq, int):
            raise ValueError(f"acked_seq must be an int, not {acked_seq!r}")
        epoch = self._epoch if epoch is None else epoch
        deleted = self._delete_acked(epoch, acked_seq, list(ranges))
        kept = [
            e
            for e in self._held
            if event_epoch(e) != epoch or not _in_ranges(e["seq"], acked_seq, ranges)
        ]
        forgotten = len(self._held) - len(kept)
        if forgotten:
            # Acknowledged straight from memory: the server holds them, the disk never will.
            self._held = kept
            with self._lock:
                self._held_len = len(kept)
            self._write_floor(self._held[-1] if self._held else None)
        if deleted:
            self._flush_sync()
            self._leave_reserve()
        return deleted + forgotten

    def _delete_acked(self, epoch: str, acked_seq: int, ranges: list[tuple[int, int]]) -> int:
        assert self._conn is not None
        where = " OR ".join(["seq <= ?", *["seq BETWEEN ? AND ?"] * len(ranges)])
        params: list[Any] = [epoch, acked_seq, *(n for pair in ranges for n in pair)]
        try:
            # Not fsynced on its own (the next append's fsync carries it): a delete lost to a
            # power cut only sends those events again, and the server keeps each once. So an
            # acknowledgement never holds a tap's append behind a slow SD card's fsync.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            with _transaction(self._conn):
                deleted = self._conn.execute(
                    f"DELETE FROM events WHERE epoch = ? AND ({where})", params
                ).rowcount
        except (sqlite3.Error, OSError) as exc:
            error = JournalFull if "full" in str(exc).lower() else JournalError
            raise error(f"cannot delete acknowledged events from {self.path}: {exc}") from exc
        finally:
            self._conn.execute("PRAGMA synchronous=FULL")
        self._stored -= deleted
        return int(deleted)

    def _leave_reserve(self) -> None:
        """Back to normal once the reserve can be made again (someone freed the disk) and a
        capped journal fits under its cap again."""
        if self._reserve_cap is None or self._held:
            return
        assert self._conn is not None
        if self.max_pages is not None:
            self._conn.executescript("PRAGMA incremental_vacuum")  # execute() frees one page
            (pages,) = self._conn.execute("PRAGMA page_count").fetchone()
            if pages >= self.max_pages:
                return
        if not self._reserve.make():
            return
        if self.max_pages is not None:
            self._conn.execute(f"PRAGMA max_page_count={int(self.max_pages)}")
        self._reserve_cap = None
        log.warning("journal %s has its reserve again", self.path)

    def _dead_letter_sync(self, event: Mapping[str, Any], error: str) -> None:
        """Out of the queue (disk or memory) into ``dead_letters``, in one transaction."""
        epoch, seq = event_epoch(event), int(event["seq"])
        held = [e for e in self._held if event_epoch(e) == epoch and e["seq"] == seq]
        if held:
            self._held.remove(held[0])
            with self._lock:
                self._held_len = len(self._held)
            self._dead_held.append((held[0], error))
            self._write_dead_held()
            return
        assert self._conn is not None
        try:
            with _transaction(self._conn):
                deleted = self._conn.execute(
                    "DELETE FROM events WHERE epoch = ? AND seq = ?", (epoch, seq)
                ).rowcount
                if deleted:
                    self._insert_dead(dict(event), error)
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot move event {seq} to dead letters: {exc}") from exc
        self._stored -= deleted
        log.error("audit event seq %d refused by the server, kept as a dead letter: %s", seq, error)

    def _insert_dead(self, event: dict[str, Any], error: str) -> None:
        assert self._conn is not None
        self._conn.execute(
            "INSERT INTO dead_letters (epoch, seq, body, error, at) VALUES (?, ?, ?, ?, ?)",
            (event_epoch(event), event["seq"], canonical_json(event).decode(), error[:500],
             _wall_time()),
        )  # fmt: skip

    def _write_dead_held(self) -> None:
        if not self._dead_held:
            return
        assert self._conn is not None
        try:
            with _transaction(self._conn):
                for event, error in self._dead_held:
                    self._insert_dead(event, error)
        except (sqlite3.Error, OSError):
            return  # still in memory, still counted in the heartbeat
        self._dead_held.clear()

    def _dead_letters_sync(self) -> list[dict[str, Any]]:
        assert self._conn is not None
        rows = self._conn.execute("SELECT body, error FROM dead_letters ORDER BY id").fetchall()
        stored = [{"event": json.loads(body), "error": error} for body, error in rows]
        return stored + [{"event": e, "error": err} for e, err in self._dead_held]

    def _state_sync(self) -> dict[str, Any]:
        assert self._conn is not None
        (dead,) = self._conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        reserve = "in_use" if self._reserve_cap is not None else "ready"
        if self._reserve.size <= 0:
            reserve = "none"
        return {
            "epoch": self._epoch,
            "full": bool(self._held) or self._reserve_cap is not None,
            "reserve": reserve,
            "held": len(self._held),
            "dead_letters": int(dead) + len(self._dead_held),
            "lost": self._lost,
        }

    def _close_sync(self) -> None:
        if self._conn is None:
            return
        self._flush_sync()
        if self._held:
            log.error(
                "journal %s closed with %d events never written (seq %d..%d); the next start"
                " reports them unless the server acknowledged them",
                self.path,
                len(self._held),
                self._held[0]["seq"],
                self._held[-1]["seq"],
            )
        self._conn.close()
        self._conn = None


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error.

    sqlite3's own context manager relies on implicit BEGIN, which autocommit mode disables.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        else:
            self._rollback()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("journal rollback failed")
