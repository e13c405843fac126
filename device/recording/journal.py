"""The kiosk's audit journal: a per-device, gap-free, hash-chained event log in SQLite.

DESIGN.md "Audit log": every tap, decision, guard action and fault becomes one event that is
never lost and never duplicated, even if the process is killed at any moment. Hence:

* SQLite in WAL mode with ``synchronous=FULL``: once :meth:`Journal.append` returns, the
  event survives a power cut or ``kill -9``.
* the event, its sequence number and the chain head (``meta`` table) are written in one
  transaction, so a crash leaves either all or none of them; the sequence continues across
  restarts even after every row was acknowledged and deleted.
* one connection, used only from one dedicated worker thread: sqlite blocks, and the event
  loop must stay free for the three-second promise.
* if the disk is full or failing, an event is kept in memory, flagged
  ``detail.journal_overflow``, and written in order as soon as the database accepts writes
  again; the caller (a tap in progress) never sees an exception for it.

The events are exactly the ``POST /v1/audit`` events of docs/api.md; :func:`hash_event` is
the canonical hash the server recomputes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from core import audit
from core.canonical import canonical_json
from core.idnumbers import find_clear_ids
from device.errors import JournalError, JournalFull

__all__ = [
    "EVENT_KINDS",
    "GENESIS_HASH",
    "Journal",
    "canonical_json",
    "hash_event",
    "verify_chain",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: ``prev_hash`` of the first event of a device.
GENESIS_HASH: Final = audit.GENESIS_HASH

#: Allowed values of an event's ``kind``.
EVENT_KINDS: Final = audit.KINDS

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
_JOURNAL_FIELDS: Final = frozenset({"seq", "wall_time", "mono_ns", "boot_id", "prev_hash", "hash"})

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq  INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    body TEXT NOT NULL  -- the event exactly as uploaded, canonical JSON
);
"""
_SCHEMA_VERSION: Final = "1"


def hash_event(event_without_hash: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of an event without its ``hash`` field.

    A ``hash`` key, if present, is left out, so ``hash_event(e) == e["hash"]`` checks a
    stored event.
    """
    return audit.hash_event(event_without_hash)


def verify_chain(
    events: Sequence[Mapping[str, Any]], prev_hash: str = GENESIS_HASH, prev_seq: int = 0
) -> list[int]:
    """Sequence numbers at which ``events`` break the chain (bad hash, link or gap).

    ``prev_hash``/``prev_seq`` describe the event just before the first one given; the
    defaults mean "starts at the beginning of the device's history".
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
    if out["kind"] not in EVENT_KINDS:
        raise ValueError(f"kind must be one of {sorted(EVENT_KINDS)}, not {out['kind']!r}")
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
    if not isinstance(out["detail"], Mapping):
        raise ValueError(f"detail must be an object, not {type(out['detail']).__name__}")
    try:
        # Round trip: a private copy, JSON-only types, no NaN (the canonical form must be
        # valid JSON so that any server can recompute the hash).
        out["detail"] = json.loads(json.dumps(out["detail"], allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"detail is not JSON-serialisable: {exc}") from None
    leaked = find_clear_ids(out, audit.COUNTER_FIELDS)
    if leaked:
        where = ", ".join(f"{path or 'event'}: {masked}" for path, masked in leaked)
        raise ValueError(
            f"refusing to journal a full ID number ({where}): store masked_id and pseudonym only"
        )
    return out


class Journal:
    """Durable, hash-chained audit events of one device, uploaded and acknowledged in order.

    All methods but the constructor are coroutines; the database work runs on one worker
    thread owned by the journal. The database is opened by the first call (or explicitly
    by :meth:`open`, which the agent should await at start-up to fail early).

    ``max_pages`` caps the database size (``PRAGMA max_page_count``), so the journal cannot
    fill the SD card other parts of the system need; hitting the cap behaves exactly like a
    full disk.
    """

    def __init__(
        self,
        path: Path,
        device_id: str,
        boot_id: str,
        *,
        max_pages: int | None = None,
    ) -> None:
        if not device_id or not boot_id:
            raise ValueError("device_id and boot_id must be non-empty")
        self.path = Path(path)
        self.device_id = device_id
        self.boot_id = boot_id
        self.max_pages = max_pages
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._closed = False
        # Owned by the worker thread from here on.
        self._conn: sqlite3.Connection | None = None
        self._open_error: JournalError | None = None
        self._last_seq = 0
        self._last_hash = GENESIS_HASH
        self._overflow: list[dict[str, Any]] = []
        self._overflow_logged = False
        self._lock = threading.Lock()  # guards the two counters read from the loop
        self._overflow_len = 0

    # ----------------------------------------------------------------- public API

    async def open(self) -> None:
        """Open (or create) the database now; JournalError if it cannot be used."""
        await self._run(lambda: None)

    async def append(self, event_fields: Mapping[str, Any]) -> dict[str, Any]:
        """Record one event and return it exactly as it will be uploaded.

        ``event_fields`` are the caller's fields of docs/api.md (``kind`` and
        ``clock_trusted`` required; ``outcome``, ``prompt``, ``masked_id``, ``pseudonym``,
        ``cache_age_s``, ``latency_ms`` default to None, ``offline`` to False, ``detail``
        to ``{}``). The journal sets ``seq``, ``wall_time``, ``mono_ns``, ``boot_id``,
        ``prev_hash`` and ``hash``. ValueError for a malformed event or one containing a
        full ID number. When the database cannot be written the event is held in memory,
        returned with ``detail["journal_overflow"] = True``, and written later in order.
        """
        fields = _build_fields(event_fields)
        wall_time, mono_ns = _wall_time(), time.monotonic_ns()
        return await self._run(lambda: self._append_sync(fields, wall_time, mono_ns))

    async def pending(self, limit: int = 500) -> list[dict[str, Any]]:
        """Up to ``limit`` durably stored, unacknowledged events, oldest first.

        Events held in memory after a write failure are not included: they are uploaded
        once they are on disk, so that an acknowledgement never covers an event whose
        sequence number a restart could hand out again.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        return await self._run(lambda: self._pending_sync(limit))

    async def ack(self, acked_seq: int) -> int:
        """Delete the events with ``seq <= acked_seq``; return how many were deleted.

        Freed space is used at once to write events held in memory. JournalFull or
        JournalError if the deletion itself fails (the events are then simply uploaded
        again, which the server counts as duplicates).
        """
        return await self._run(lambda: self._ack_sync(acked_seq))

    async def count(self) -> int:
        """Events not yet acknowledged: on disk plus held in memory (heartbeat's pending)."""
        return await self._run(self._count_sync)

    async def flush(self) -> int:
        """Try to write events held in memory; return how many were written."""
        return await self._run(self._flush_sync)

    @property
    def overflow_count(self) -> int:
        """Events currently held in memory because the database refused them."""
        with self._lock:
            return self._overflow_len

    async def last(self) -> tuple[int, str]:
        """``(seq, hash)`` of the newest event ever appended (``(0, GENESIS_HASH)`` if none)."""
        return await self._run(lambda: (self._last_seq, self._last_hash))

    async def close(self) -> None:
        """Write what can be written, close the database and stop the worker thread.

        Events still held in memory at this point cannot be kept: they are logged (masked
        fields only) as an error.
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

    # ----------------------------------------------------------------- worker side

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
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(f"journal {self.path}: cannot use WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            if self.max_pages is not None:
                conn.execute(f"PRAGMA max_page_count={int(self.max_pages)}")
            conn.executescript(_SCHEMA)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                with _transaction(conn):
                    conn.executemany(
                        "INSERT INTO meta(key, value) VALUES (?, ?)",
                        [
                            ("schema_version", _SCHEMA_VERSION),
                            ("device_id", self.device_id),
                            ("last_seq", "0"),
                            ("last_hash", GENESIS_HASH),
                        ],
                    )
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("device_id") != self.device_id:
                raise JournalError(
                    f"journal {self.path} belongs to device {meta.get('device_id')!r}, "
                    f"not {self.device_id!r}: refusing to mix two hash chains"
                )
            if meta.get("schema_version") != _SCHEMA_VERSION:
                raise JournalError(
                    f"journal {self.path}: unsupported schema version "
                    f"{meta.get('schema_version')!r}"
                )
            self._last_seq = int(meta["last_seq"])
            self._last_hash = meta["last_hash"]
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

    def _write(self, events: list[dict[str, Any]]) -> None:
        """Insert ``events`` and move the chain head, atomically."""
        assert self._conn is not None
        conn = self._conn
        with _transaction(conn):
            conn.executemany(
                "INSERT INTO events(seq, hash, body) VALUES (?, ?, ?)",
                [(e["seq"], e["hash"], canonical_json(e).decode("utf-8")) for e in events],
            )
            last = events[-1]
            conn.executemany(
                "UPDATE meta SET value = ? WHERE key = ?",
                [(str(last["seq"]), "last_seq"), (last["hash"], "last_hash")],
            )

    def _append_sync(self, fields: dict[str, Any], wall_time: str, mono_ns: int) -> dict[str, Any]:
        event: dict[str, Any] = {
            **fields,
            "seq": self._last_seq + 1,
            "wall_time": wall_time,
            "mono_ns": mono_ns,
            "boot_id": self.boot_id,
            "prev_hash": self._last_hash,
        }
        event["hash"] = hash_event(event)
        try:
            self._write([*self._overflow, event])
        except sqlite3.IntegrityError as exc:
            raise JournalError(f"journal {self.path} is inconsistent: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:
            # The flag is part of the hashed content: the audit trail itself shows that
            # this event lived only in memory for a while.
            event["detail"] = {**event["detail"], "journal_overflow": True}
            event["hash"] = hash_event(event)
            self._hold(event, exc)
        else:
            self._recovered()
        self._last_seq, self._last_hash = event["seq"], event["hash"]
        copy: dict[str, Any] = json.loads(canonical_json(event))  # the caller's own copy
        return copy

    def _hold(self, event: dict[str, Any], exc: BaseException) -> None:
        self._overflow.append(event)
        with self._lock:
            self._overflow_len = len(self._overflow)
        if not self._overflow_logged:
            self._overflow_logged = True
            log.error(
                "journal %s cannot be written (%s); holding events in memory from seq %d",
                self.path,
                exc,
                event["seq"],
            )

    def _recovered(self) -> None:
        if self._overflow:
            log.warning(
                "journal %s writable again: wrote %d events held in memory",
                self.path,
                len(self._overflow),
            )
        self._overflow.clear()
        self._overflow_logged = False
        with self._lock:
            self._overflow_len = 0

    def _flush_sync(self) -> int:
        if not self._overflow:
            return 0
        n = len(self._overflow)
        try:
            self._write(list(self._overflow))
        except sqlite3.IntegrityError as exc:
            raise JournalError(f"journal {self.path} is inconsistent: {exc}") from exc
        except (sqlite3.Error, OSError):
            return 0
        self._recovered()
        return n

    def _pending_sync(self, limit: int) -> list[dict[str, Any]]:
        assert self._conn is not None
        try:
            rows = self._conn.execute(
                "SELECT body FROM events ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        return [json.loads(body) for (body,) in rows]

    def _ack_sync(self, acked_seq: int) -> int:
        assert self._conn is not None
        if isinstance(acked_seq, bool) or not isinstance(acked_seq, int):
            raise ValueError(f"acked_seq must be an int, not {acked_seq!r}")
        try:
            with _transaction(self._conn):
                deleted = self._conn.execute(
                    "DELETE FROM events WHERE seq <= ?", (acked_seq,)
                ).rowcount
        except (sqlite3.Error, OSError) as exc:
            error = JournalFull if "full" in str(exc).lower() else JournalError
            raise error(f"cannot delete acknowledged events from {self.path}: {exc}") from exc
        if deleted:
            self._flush_sync()
        return deleted

    def _count_sync(self) -> int:
        assert self._conn is not None
        try:
            (stored,) = self._conn.execute("SELECT count(*) FROM events").fetchone()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        return int(stored) + len(self._overflow)

    def _close_sync(self) -> None:
        if self._conn is None:
            return
        self._flush_sync()
        if self._overflow:
            log.error(
                "journal %s closed with %d events never written (seq %d..%d)",
                self.path,
                len(self._overflow),
                self._overflow[0]["seq"],
                self._overflow[-1]["seq"],
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
