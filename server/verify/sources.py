"""Source adapters: each answers one of the four checks for an ID number.

An adapter knows nothing of kiosks or policy. The four local adapters read the source tables
that ``server.verify.importer`` fills; an adapter for a remote upstream implements the same
:class:`SourceAdapter` protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable

from core.checks import HealthCode, NatResult, SourceResult, Travel, Vaccination
from server.storage.connection import Connection
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


class HealthCodeSource:
    """Health-code colour from the ``health_codes`` table."""

    name = "health_code"

    def __init__(self, db: Database) -> None:
        self._db = db

    async def lookup(self, id_number: str) -> SourceResult[HealthCode]:
        """Return the person's current colour."""
        return await self._db.run(self._query, id_number)

    @staticmethod
    def _query(conn: Connection, id_number: str) -> SourceResult[HealthCode]:
        row = conn.execute(
            "SELECT colour, reason, updated_at FROM health_codes WHERE id_number = ?",
            (id_number,),
        ).fetchone()
        if row is None:
            return SourceResult.missing()
        return SourceResult.ok(HealthCode(row[0], row[1], parse_time(row[2])))


class NatSource:
    """The latest nucleic-acid test result from ``nat_results``."""

    name = "nat"

    def __init__(self, db: Database) -> None:
        self._db = db

    async def lookup(self, id_number: str) -> SourceResult[NatResult]:
        """Return the most recently sampled result."""
        return await self._db.run(self._query, id_number)

    @staticmethod
    def _query(conn: Connection, id_number: str) -> SourceResult[NatResult]:
        row = conn.execute(
            "SELECT result, sampled_at, lab FROM nat_results WHERE id_number = ?"
            " ORDER BY sampled_at DESC LIMIT 1",
            (id_number,),
        ).fetchone()
        if row is None:
            return SourceResult.missing()
        return SourceResult.ok(NatResult(row[0], parse_time(row[1]), row[2]))


class VaccinationSource:
    """Dose count and last dose date from ``vaccinations``."""

    name = "vaccination"

    def __init__(self, db: Database) -> None:
        self._db = db

    async def lookup(self, id_number: str) -> SourceResult[Vaccination]:
        """Return the number of doses and the date of the last one."""
        return await self._db.run(self._query, id_number)

    @staticmethod
    def _query(conn: Connection, id_number: str) -> SourceResult[Vaccination]:
        row = conn.execute(
            "SELECT COUNT(*), MAX(vaccinated_at) FROM vaccinations WHERE id_number = ?",
            (id_number,),
        ).fetchone()
        if row is None or row[0] == 0:
            return SourceResult.missing()
        return SourceResult.ok(Vaccination(int(row[0]), date.fromisoformat(row[1])))


class TravelSource:
    """Travel/risk-history flag from ``travel``."""

    name = "travel"

    def __init__(self, db: Database) -> None:
        self._db = db

    async def lookup(self, id_number: str) -> SourceResult[Travel]:
        """Return whether the person is flagged."""
        return await self._db.run(self._query, id_number)

    @staticmethod
    def _query(conn: Connection, id_number: str) -> SourceResult[Travel]:
        row = conn.execute(
            "SELECT flagged, area, updated_at FROM travel WHERE id_number = ?", (id_number,)
        ).fetchone()
        if row is None:
            return SourceResult.missing()
        return SourceResult.ok(Travel(bool(row[0]), row[1], parse_time(row[2])))


def local_sources(db: Database) -> Sequence[SourceAdapter]:
    """The four adapters over the server's own database, in canonical order."""
    return (HealthCodeSource(db), NatSource(db), VaccinationSource(db), TravelSource(db))
