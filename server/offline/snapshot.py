"""Signed site snapshots: what a kiosk needs to decide offline for the people expected at its site.

``GET /v1/snapshot`` answers ``{"snapshot": {...}, "signature": hex, "key_id": hex}``. The
snapshot lists the site's people (table ``site_people``) under their pseudonym
``HMAC-SHA256(site key, ID number)`` (exactly ``device.privacy.pseudonym`` under the key in
the bundles of that site's kiosks, ``server.offline.keys.site_key``; no other site's kiosk
can derive them) with the facts the policy needs, and is signed with the server's Ed25519 key
over its canonical JSON (``json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``, UTF-8). No clear ID number is in it.

Facts come from the local source tables; for a check kind served by an HTTP upstream they come
from the last value that upstream gave for the person (``null`` when there is none). At most
``[snapshot] max_people`` people are listed (``truncated`` says when a site has more); a site's
snapshot is built off the event loop, shared by concurrent requests and reused for
``[snapshot] cache_s`` seconds.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from core.canonical import canonical_json
from core.checks import HealthCode, NatResult, Travel, Vaccination
from core.idnumbers import pseudonym
from core.policy import SitePolicy, policy_document
from server.config import ServerConfig
from server.offline.keys import SigningKey, site_key
from server.storage.connection import Connection
from server.storage.db import Database
from server.verify.resilience import ResilientSource

log = logging.getLogger(__name__)

MAX_CACHED_SITES = 32
Clock = Callable[[], datetime]


def _blank(local: frozenset[str]) -> dict[str, Any]:
    return {
        "colour": None,
        "nat_result": None,
        "nat_sampled_at": None,
        "doses": 0 if "vaccination" in local else None,
        "last_dose_at": None,
        "travel_flagged": None,
        "area": None,
    }


@dataclass(frozen=True)
class SiteData:
    """A site's people in clear (server memory only) with their facts, and the site's
    pseudonym key."""

    site_key: bytes
    people: dict[str, dict[str, Any]]
    truncated: bool


def read_site(
    conn: Connection, key: bytes, site: str, limit: int, local: frozenset[str]
) -> SiteData:
    """Read the site's first ``limit`` people (by ID number) and their facts from the local
    tables of the kinds in ``local``; ``key`` is the site's pseudonym key."""
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT id_number FROM site_people WHERE site = ? ORDER BY id_number LIMIT ?",
            (site, limit + 1),
        )
    ]
    truncated = len(ids) > limit
    people = {n: _blank(local) for n in ids[:limit]}
    join = " FROM site_people sp JOIN {table} t ON t.id_number = sp.id_number WHERE sp.site = ?"
    if "health_code" in local:
        sql = "SELECT t.id_number, t.colour" + join.format(table="health_codes")
        for number, colour in conn.execute(sql, (site,)):
            if number in people:
                people[number]["colour"] = colour
    if "nat" in local:
        sql = "SELECT t.id_number, t.result, t.sampled_at" + join.format(table="nat_results")
        for number, result, sampled_at in conn.execute(sql + " ORDER BY t.sampled_at", (site,)):
            if number in people:  # ascending: the latest sample is written last
                people[number].update(nat_result=result, nat_sampled_at=sampled_at)
    if "vaccination" in local:
        sql = "SELECT t.id_number, COUNT(*), MAX(t.vaccinated_at)" + join.format(
            table="vaccinations"
        )
        for number, doses, last in conn.execute(sql + " GROUP BY t.id_number", (site,)):
            if number in people:
                people[number].update(doses=int(doses), last_dose_at=last)
    if "travel" in local:
        sql = "SELECT t.id_number, t.flagged, t.area" + join.format(table="travel")
        for number, flagged, area in conn.execute(sql, (site,)):
            if number in people:
                people[number].update(travel_flagged=bool(flagged), area=area)
    return SiteData(key, people, truncated)


def read_site_file(path: str, key: bytes, site: str, limit: int, local: frozenset[str]) -> SiteData:
    """:func:`read_site` on a connection of its own, read-only (a worker thread's call).

    SQLite in WAL mode lets this read run beside the server's database thread, so building a
    large snapshot never holds up the verify lookups queued there.
    """
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.execute("BEGIN")  # one consistent view across the four queries
        return read_site(conn, key, site, limit, local)
    finally:
        conn.close()


def read_site_consistent(
    conn: Connection, key: bytes, site: str, limit: int, local: frozenset[str]
) -> SiteData:
    """:func:`read_site` in one read-only snapshot transaction (PostgreSQL's pooled call)."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        return read_site(conn, key, site, limit, local)
    finally:
        conn.execute("COMMIT")


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def overlay(people: dict[str, dict[str, Any]], source: ResilientSource) -> None:
    """Fill the facts of ``source``'s kind from its last-known values (HTTP upstreams)."""
    for number, facts in people.items():
        known = source.peek(number)
        value = known.value if known is not None else None
        if isinstance(value, HealthCode):
            facts["colour"] = value.colour
        elif isinstance(value, NatResult):
            facts.update(nat_result=value.result, nat_sampled_at=_iso(value.sampled_at))
        elif isinstance(value, Vaccination):
            last: date | None = value.last_dose_at
            facts.update(doses=value.doses, last_dose_at=last.isoformat() if last else None)
        elif isinstance(value, Travel):
            facts.update(travel_flagged=value.flagged, area=value.area)


@dataclass(frozen=True)
class Snapshot:
    """One built snapshot: the response body (plain and gzip) and what it holds."""

    body: bytes
    gzip_body: bytes
    count: int
    truncated: bool


def canonical_snapshot(header: Mapping[str, Any], people: Mapping[str, Any]) -> bytes:
    """``canonical_json({**header, "people": people})``, built one person at a time.

    Byte for byte the same as the one ``json.dumps`` call (a test holds it to that), but many
    small calls instead of one long one, so a 50,000-person build on a worker thread never
    holds the GIL long enough to stall the event loop.
    """
    head = canonical_json({**header, "people": {}})
    marker = b'"people":{}'
    at = head.index(marker) + len(marker) - 1
    parts = [head[:at]]
    for i, name in enumerate(sorted(people)):
        entry = canonical_json({name: people[name]})[1:-1]
        parts.append(entry if i == 0 else b"," + entry)
    parts.append(head[at:])
    return b"".join(parts)


def encode(
    data: SiteData, site: str, generated_at: datetime, policy: SitePolicy, key: SigningKey
) -> Snapshot:
    """Pseudonymise, serialise canonically, sign. CPU-bound: run it off the event loop."""
    people = {pseudonym(data.site_key, n): facts for n, facts in data.people.items()}
    header = {
        "site": site,
        "generated_at": _iso(generated_at),
        "policy": policy_document(policy),
        "count": len(people),
        "truncated": data.truncated,
    }
    signed = canonical_snapshot(header, people)
    signature = key.sign(signed).hex()
    tail = json.dumps({"signature": signature, "key_id": key.key_id})
    # {"snapshot": <the exact signed bytes>, "signature": ..., "key_id": ...}
    body = b'{"snapshot":' + signed + b"," + tail[1:].encode()
    return Snapshot(body, gzip.compress(body, compresslevel=5), len(people), data.truncated)


class SnapshotService:
    """Builds each site's snapshot on demand, once per ``cache_s`` and once at a time."""

    def __init__(
        self,
        db: Database,
        key: SigningKey,
        config: ServerConfig,
        sources: Mapping[str, ResilientSource],
        clock: Clock,
    ) -> None:
        self._db = db
        self._key = key
        self._config = config
        self._sources = sources
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Snapshot]] = OrderedDict()
        self._building: dict[str, asyncio.Task[Snapshot]] = {}
        self.builds = 0

    async def get(self, site: str) -> Snapshot:
        """The site's snapshot, rebuilt when older than ``cache_s``."""
        hit = self._cache.get(site)
        if hit is not None and time.monotonic() - hit[0] < self._config.snapshot_cache_s:
            return hit[1]
        task = self._building.get(site)
        if task is None:
            task = asyncio.create_task(self._build(site))
            self._building[site] = task
            task.add_done_callback(lambda t: self._done(site, t))
        return await asyncio.shield(task)

    def _done(self, site: str, task: asyncio.Task[Snapshot]) -> None:
        self._building.pop(site, None)
        if not task.cancelled() and task.exception() is None:
            self._cache[site] = (time.monotonic(), task.result())
            self._cache.move_to_end(site)
            while len(self._cache) > MAX_CACHED_SITES:
                self._cache.popitem(last=False)

    async def _build(self, site: str) -> Snapshot:
        started = time.monotonic()
        config = self._config
        local = frozenset(n for n in self._sources if config.source(n).type == "local")
        key = bytes.fromhex(await self._db.run(site_key, site))
        limit = config.snapshot_max_people
        if self._db.dialect == "sqlite":
            data = await asyncio.to_thread(read_site_file, self._db.target, key, site, limit, local)
        else:
            data = await self._db.run(read_site_consistent, key, site, limit, local)
        for name, source in self._sources.items():
            if name not in local:
                overlay(data.people, source)
        snapshot = await asyncio.to_thread(
            encode, data, site, self._clock(), config.policy_for(site), self._key
        )
        self.builds += 1
        if snapshot.truncated:
            log.warning(
                "snapshot of site %s truncated to %d people ([snapshot] max_people)",
                site,
                snapshot.count,
            )
        log.info(
            "snapshot of site %s: %d people, %d bytes, built in %.0f ms",
            site,
            snapshot.count,
            len(snapshot.body),
            (time.monotonic() - started) * 1000,
        )
        return snapshot

    async def close(self) -> None:
        """Cancel builds in progress (application shutdown)."""
        tasks = list(self._building.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
