"""The kiosk's offline memory: the last four-in-one facts per person, under a pseudonym.

Keyed by HMAC(fleet key, ID number), holding only what the policy needs (code colour, NAT
result and sampling time, doses, travel flag) and when the server said so. Decisions are
re-made from these facts at tap time by the same pure policy the server uses
(`core.policy.decide`), so a cached pass becomes `nat_expired` when the window runs out
while the kiosk is offline. Entries older than `max_age_s` are never used.

Two kinds of entries: `verify` (learnt from this kiosk's own online answers) and `snapshot`
(a signed list of the site's expected people, so a first-time tap during an outage still
decides). A new snapshot replaces the old one in a single transaction, and only after its
signature was verified: the cache is never emptied before its replacement is known good.

SQLite, one connection on one worker thread, like the journal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.policy import DEFAULT_NAT_WINDOW_HOURS
from device.errors import CacheError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# The policy-relevant fields, per check, that a verify answer carries (docs/api.md).
_FIELDS: dict[str, tuple[str, ...]] = {
    "health_code": ("status", "colour", "updated_at"),
    "nat": ("status", "result", "sampled_at"),
    "vaccination": ("status", "doses", "last_dose_at"),
    "travel": ("status", "flagged", "area", "updated_at"),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    pseudonym TEXT PRIMARY KEY,
    facts TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    origin TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class CachedFacts:
    """One person's cached facts and how old they are."""

    facts: Mapping[str, Any]
    fetched_at: float  # wall-clock seconds (server time when known)
    origin: str  # "verify" | "snapshot"

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.fetched_at)


def facts_from_checks(checks: Mapping[str, Any]) -> dict[str, Any] | None:
    """Keep only what the policy needs from a verify answer's `checks`; None if unusable."""
    facts: dict[str, Any] = {}
    for name, keys in _FIELDS.items():
        check = checks.get(name)
        if not isinstance(check, Mapping):
            return None
        status = check.get("status")
        if status == "stale":
            status = "ok"  # the server used a last-known value; for us it is a fact
        if status not in ("ok", "missing"):
            return None  # a failed source is not a fact worth remembering
        facts[name] = {k: check.get(k) for k in keys} | {"status": status}
    nat, vac = checks.get("nat"), checks.get("vaccination")
    window = nat.get("window_hours") if isinstance(nat, Mapping) else None
    doses = vac.get("min_doses") if isinstance(vac, Mapping) else None
    facts["policy"] = {
        "nat_window_hours": window if isinstance(window, int | float) else DEFAULT_NAT_WINDOW_HOURS,
        "min_doses": doses if isinstance(doses, int) else 0,
    }
    code = checks.get("health_code")
    colours = code.get("colours") if isinstance(code, Mapping) else None
    if isinstance(colours, Mapping):
        facts["policy"]["colours"] = dict(colours)  # the site's table, not the default one
    return facts


class KioskCache:
    """Pseudonymised facts with a hard maximum age."""

    def __init__(self, path: Path, *, max_age_s: float, max_entries: int = 200_000) -> None:
        self.path = path
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cache")
        self._conn: sqlite3.Connection | None = None
        self.hits = 0
        #: The installed site snapshot's ``generated_at`` (server clock), None before one.
        self.snapshot_at: float | None = None
        self.misses = 0
        self.expired = 0

    async def _run(self, fn: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()

        def job() -> _T:
            try:
                if self._conn is None:
                    self._open()
                return fn()
            except sqlite3.Error as exc:
                raise CacheError(f"{self.path}: {exc}") from exc

        return await loop.run_in_executor(self._executor, job)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'snapshot'").fetchone()
        except sqlite3.Error:
            conn.close()
            raise
        self._conn = conn
        if row is not None:
            self.snapshot_at = float(json.loads(row[0])["generated_at"])

    async def open(self) -> None:
        await self._run(lambda: None)

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)

    # -- reading -----------------------------------------------------------------------------
    async def get(self, pseudonym: str, now: float | None = None) -> CachedFacts | None:
        """The facts for a person if present and younger than the hard maximum age."""
        at = time.time() if now is None else now

        def read() -> CachedFacts | None:
            assert self._conn is not None
            row = self._conn.execute(
                "SELECT facts, fetched_at, origin FROM entries WHERE pseudonym = ?", (pseudonym,)
            ).fetchone()
            if row is None:
                return None
            return CachedFacts(json.loads(row[0]), float(row[1]), str(row[2]))

        found = await self._run(read)
        if found is None:
            self.misses += 1
            return None
        if found.age_s(at) > self.max_age_s or found.fetched_at > at + 300:
            self.expired += 1
            return None
        self.hits += 1
        return found

    async def count(self) -> int:
        def n() -> int:
            assert self._conn is not None
            return int(self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

        return await self._run(n)

    # -- writing -----------------------------------------------------------------------------
    async def put(self, pseudonym: str, facts: Mapping[str, Any], fetched_at: float) -> None:
        """Remember what the server said about a person (replaces older facts)."""
        blob = json.dumps(facts, sort_keys=True, ensure_ascii=False)

        def write() -> None:
            assert self._conn is not None
            self._conn.execute(
                "INSERT INTO entries (pseudonym, facts, fetched_at, origin) "
                "VALUES (?, ?, ?, 'verify') ON CONFLICT (pseudonym) DO UPDATE SET "
                "facts = excluded.facts, fetched_at = excluded.fetched_at, origin = 'verify' "
                "WHERE excluded.fetched_at >= entries.fetched_at",
                (pseudonym, blob, fetched_at),
            )

        await self._run(write)

    async def replace_snapshot(
        self, people: Mapping[str, Mapping[str, Any]], generated_at: float, key_id: str
    ) -> int:
        """Swap in a verified snapshot in one transaction; fresher `verify` entries win."""

        def swap() -> int:
            assert self._conn is not None
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM entries WHERE origin = 'snapshot'")
                conn.executemany(
                    "INSERT INTO entries (pseudonym, facts, fetched_at, origin) "
                    "VALUES (?, ?, ?, 'snapshot') ON CONFLICT (pseudonym) DO UPDATE SET "
                    "facts = excluded.facts, fetched_at = excluded.fetched_at, "
                    "origin = 'snapshot' WHERE excluded.fetched_at > entries.fetched_at",
                    (
                        (p, json.dumps(f, sort_keys=True, ensure_ascii=False), generated_at)
                        for p, f in people.items()
                    ),
                )
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('snapshot', ?)",
                    (json.dumps({"generated_at": generated_at, "key_id": key_id}),),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self.snapshot_at = generated_at
            return len(people)

        return await self._run(swap)

    async def prune(self, now: float | None = None) -> int:
        """Delete entries past the hard maximum age and keep the table bounded."""
        at = time.time() if now is None else now

        def purge() -> int:
            assert self._conn is not None
            cur = self._conn.execute(
                "DELETE FROM entries WHERE fetched_at < ?", (at - self.max_age_s,)
            )
            removed = cur.rowcount
            over = self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            if over > self.max_entries:
                cur = self._conn.execute(
                    "DELETE FROM entries WHERE pseudonym IN (SELECT pseudonym FROM entries "
                    "ORDER BY fetched_at LIMIT ?)",
                    (over - self.max_entries,),
                )
                removed += cur.rowcount
            return int(removed)

        return await self._run(purge)


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO 8601 timestamp with offset, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
