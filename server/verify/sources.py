"""Source adapters: each answers one of the four checks for an ID number.

An adapter knows nothing of kiosks or policy. The four local adapters read the source tables
that ``server.verify.importer`` fills; an adapter for a remote upstream implements the same
:class:`SourceAdapter` protocol.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable

from core.checks import HealthCode, NatResult, SourceResult, Travel, Vaccination
from server.storage.db import Database


@runtime_checkable
class SourceAdapter(Protocol):
    """Looks one person up in one source."""

    name: str

    async def lookup(self, id_number: str) -> SourceResult[Any]:
        """Return ``ok`` with a record, ``missing``, or raise (the verifier maps it to error)."""
        ...


def parse_time(text: str) -> datetime:
    """Parse a stored ISO 8601 timestamp (always stored with an offset)."""
    return datetime.fromisoformat(text)


#: The four point reads for one person in one statement, each row tagged with its source.
#: Every column is text on both backends (a ``UNION`` needs one type per column).
PERSON_SQL = """
SELECT 'health_code', colour, reason, updated_at
  FROM health_codes WHERE id_number = ?
UNION ALL
SELECT 'nat', result, sampled_at, lab
  FROM (SELECT result, sampled_at, lab FROM nat_results WHERE id_number = ?
        ORDER BY sampled_at DESC LIMIT 1) AS latest
UNION ALL
SELECT 'vaccination', CAST(COUNT(*) AS TEXT), MAX(vaccinated_at), NULL
  FROM vaccinations WHERE id_number = ?
UNION ALL
SELECT 'travel', CAST(flagged AS TEXT), area, updated_at
  FROM travel WHERE id_number = ?
"""

Records = dict[str, SourceResult[Any]]

_MISSING: SourceResult[Any] = SourceResult.missing()


def _health_code(row: Sequence[Any]) -> SourceResult[HealthCode]:
    return SourceResult.ok(HealthCode(row[1], row[2], parse_time(row[3])))


def _nat(row: Sequence[Any]) -> SourceResult[NatResult]:
    return SourceResult.ok(NatResult(row[1], parse_time(row[2]), row[3]))


def _vaccination(row: Sequence[Any]) -> SourceResult[Vaccination]:
    doses = int(row[1])
    if doses == 0:
        return SourceResult.missing()
    return SourceResult.ok(Vaccination(doses, date.fromisoformat(row[2])))


def _travel(row: Sequence[Any]) -> SourceResult[Travel]:
    return SourceResult.ok(Travel(row[1] == "1", row[2], parse_time(row[3])))


_PARSERS: dict[str, Callable[[Sequence[Any]], SourceResult[Any]]] = {
    "health_code": _health_code,
    "nat": _nat,
    "vaccination": _vaccination,
    "travel": _travel,
}


def parse_records(rows: Sequence[Sequence[Any]]) -> Records:
    """The four :class:`SourceResult` of one :data:`PERSON_SQL` answer (absent: ``missing``)."""
    records: Records = dict.fromkeys(_PARSERS, _MISSING)
    for row in rows:
        records[row[0]] = _PARSERS[row[0]](row)
    return records


class LocalRecords:
    """Reads all four local sources for one person with one statement (one round trip).

    ``db.fetch`` runs inline on SQLite (a page-cached point read costs microseconds, less
    than a hop to the database thread) and on the asyncio pool on PostgreSQL. The four local
    adapters share one instance, and the verifier asks it once per person for all of them
    (:class:`server.verify.resilience.ResilientGroup`).
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def fetch(self, id_number: str) -> Records:
        """Every local source's answer for ``id_number``."""
        rows = await self.db.fetch(PERSON_SQL, (id_number,) * 4)
        return parse_records(rows)


_SHARED: weakref.WeakKeyDictionary[Database, LocalRecords] = weakref.WeakKeyDictionary()


def shared_records(db: Database) -> LocalRecords:
    """The one :class:`LocalRecords` of ``db``, so adapters built apart still share it."""
    records = _SHARED.get(db)
    if records is None:
        records = _SHARED[db] = LocalRecords(db)
    return records


class LocalSource:
    """One of the four checks from the server's own tables.

    :meth:`lookup` answers alone (one statement); :attr:`records` lets the verifier ask once
    for every local source of a request instead.
    """

    name: str = ""

    def __init__(self, db: Database, records: LocalRecords | None = None) -> None:
        self.records = records or shared_records(db)

    async def lookup(self, id_number: str) -> SourceResult[Any]:
        """This source's answer for ``id_number``."""
        return (await self.records.fetch(id_number))[self.name]


class HealthCodeSource(LocalSource):
    """Health-code colour from the ``health_codes`` table."""

    name = "health_code"


class NatSource(LocalSource):
    """The latest nucleic-acid test result from ``nat_results``."""

    name = "nat"


class VaccinationSource(LocalSource):
    """Dose count and last dose date from ``vaccinations``."""

    name = "vaccination"


class TravelSource(LocalSource):
    """Travel/risk-history flag from ``travel``."""

    name = "travel"


def local_sources(db: Database) -> Sequence[SourceAdapter]:
    """The four adapters over the server's own database, in canonical order."""
    records = shared_records(db)
    return (
        HealthCodeSource(db, records),
        NatSource(db, records),
        VaccinationSource(db, records),
        TravelSource(db, records),
    )
