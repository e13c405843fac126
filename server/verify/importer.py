"""CSV import of the four source tables (and the site people list, QR tokens and phone
numbers), validated row by row.

Every row is checked (header, ID checksum or permit-number shape, ISO 8601 timestamps with
an offset, enums, dose ≥ 1) and every problem reported with its row number (the header is
row 1) and column. By default a file with any bad row imports nothing (one transaction);
``skip_bad`` imports the good rows. Keyed tables are upserted, so re-importing a file is harmless.

``site_people`` names sites: a row whose site is not registered is refused (a typo would
otherwise expect people at a site no kiosk belongs to, silently), unless ``create_sites``
registers them, like ``kiosk provision add --csv --create-sites``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from core import idnumbers as identity
from core.rows import rows_text
from core.wire import MAX_TOKEN_LEN
from server.errors import ImportFormatError
from server.lookup.phones import normalise_phone, phone_hash, phone_key
from server.storage.connection import Connection
from server.storage.db import connect, durable
from server.verify.qr import token_digest

log = logging.getLogger(__name__)

#: What to do about a site that is not registered (``kiosk server import``'s words).
UNKNOWN_SITE_HINT = "register it with kiosk provision site add, or import with --create-sites"

Params = tuple[Any, ...]


@dataclass(frozen=True)
class RowError:
    """One problem in one row: ``row`` counts CSV records, the header being row 1."""

    row: int
    column: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}, column {self.column}: {self.reason}"


@dataclass
class ImportReport:
    """What an import did: rows read, rows written, and every problem found."""

    kind: str
    source: str
    rows: int = 0
    imported: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every row was valid."""
        return not self.errors

    def grouped(self) -> list[str]:
        """The problems as lines, rows with the same column and reason on one line
        (``rows 3, 5, 7-9, column site: unknown site 'x' …``) in the order they first occur,
        so 2,000 rows naming one misspelled site are one line, as ``kiosk provision add
        --csv`` reports them; ``--json`` keeps one error per row."""
        rows: dict[tuple[str, str], list[int]] = {}
        for error in self.errors:
            rows.setdefault((error.column, error.reason), []).append(error.row)
        return [
            f"{rows_text(numbers)}, column {column}: {why}"
            for (column, why), numbers in rows.items()
        ]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (``kiosk server import --json``)."""
        return {
            "kind": self.kind,
            "source": self.source,
            "rows": self.rows,
            "imported": self.imported,
            "skipped": self.skipped,
            "ok": self.ok,
            "errors": [{"row": e.row, "column": e.column, "reason": e.reason} for e in self.errors],
        }


class _Row:
    """Collects the parsed values and the problems of one CSV row."""

    def __init__(self, number: int, values: Mapping[str, str]) -> None:
        self.number = number
        self.values = values
        self.errors: list[RowError] = []

    def fail(self, column: str, reason: str) -> None:
        self.errors.append(RowError(self.number, column, reason))

    def text(self, column: str, *, required: bool = True, max_len: int = 100) -> str:
        value = self.values.get(column, "").strip()
        if required and not value:
            self.fail(column, "required")
        elif len(value) > max_len:
            self.fail(column, f"longer than {max_len} characters")
        return value

    def id_number(self) -> str:
        value = identity.normalise(self.values.get("id_number", ""))
        if not value:
            self.fail("id_number", "required")
        elif identity.is_permit_number(value):
            pass  # a foreigner permit number (3 letters + 12 digits): no check character
        elif not identity.is_well_formed(value):
            self.fail(
                "id_number",
                "must be 17 digits followed by a digit or X,"
                " or a permit number of 3 letters and 12 digits",
            )
        elif not identity.checksum_ok(value):
            self.fail("id_number", "wrong GB 11643 check character")
        return value

    def choice(self, column: str, allowed: Sequence[str]) -> str:
        value = self.values.get(column, "").strip().lower()
        if value not in allowed:
            self.fail(column, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def timestamp(self, column: str) -> str:
        value = self.values.get(column, "").strip()
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.fail(column, f"not an ISO 8601 timestamp: {value!r}")
            return ""
        if parsed.tzinfo is None:
            self.fail(column, f"timestamp needs a UTC offset (e.g. +08:00): {value!r}")
            return ""
        try:
            return parsed.astimezone(UTC).isoformat(timespec="seconds")
        except OverflowError:  # e.g. 0001-01-01T00:00:00+08:00 is before year 1 in UTC
            self.fail(column, f"timestamp out of range in UTC: {value!r}")
            return ""

    def day(self, column: str) -> str:
        value = self.values.get(column, "").strip()
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value).date().isoformat()
        except ValueError:
            self.fail(column, f"not an ISO 8601 date or timestamp: {value!r}")
            return ""

    def positive_int(self, column: str) -> int:
        value = self.values.get(column, "").strip()
        if not value.isascii() or not value.isdigit() or int(value) < 1 or int(value) > 99:
            self.fail(column, f"must be an integer from 1 to 99, got {value!r}")
            return 0
        return int(value)

    def flag(self, column: str) -> int:
        value = self.values.get(column, "").strip().lower()
        if value in ("1", "true", "yes"):
            return 1
        if value in ("0", "false", "no"):
            return 0
        self.fail(column, f"must be 0/1/true/false/yes/no, got {value!r}")
        return 0


def _health_code(r: _Row) -> Params:
    return (
        r.id_number(),
        r.choice("colour", ("green", "yellow", "red")),
        r.text("reason", required=False, max_len=200),
        r.timestamp("updated_at"),
    )


def _nat(r: _Row) -> Params:
    return (
        r.id_number(),
        r.timestamp("sampled_at"),
        r.choice("result", ("negative", "positive")),
        r.text("lab", required=False),
    )


def _vaccination(r: _Row) -> Params:
    return (
        r.id_number(),
        r.positive_int("dose"),
        r.day("vaccinated_at"),
        r.text("vaccine", required=False),
    )


def _travel(r: _Row) -> Params:
    return (
        r.id_number(),
        r.flag("flagged"),
        r.text("area", required=False),
        r.timestamp("updated_at"),
    )


def _site_person(r: _Row) -> Params:
    site = r.text("site", max_len=100)
    if any(ord(c) < 32 for c in site):
        r.fail("site", "must not contain control characters")
    return (site, r.id_number())


def _qr_token(r: _Row) -> Params:
    # Never echo the token in a problem report: only its length is safe to show.
    token = r.values.get("token", "").strip()
    if not token:
        r.fail("token", "required")
    elif len(token) > MAX_TOKEN_LEN:
        r.fail("token", f"longer than {MAX_TOKEN_LEN} characters ({len(token)})")
    elif not token.isprintable():
        r.fail("token", "must be printable characters only")
    return (token_digest(token), r.id_number(), r.timestamp("expires_at"))


def _phone(r: _Row) -> Params:
    # Never echo the number in a problem report; the normalised form is hashed before storing.
    phone = normalise_phone(r.values.get("phone", ""))
    if phone is None:
        r.fail(
            "phone",
            "not a phone number: 11 digits of a mainland mobile (optionally +86)"
            " or + and the country code",
        )
    return (phone or "", r.id_number())


def _hash_phones(conn: Connection, rows: Sequence[Params]) -> list[Params]:
    """Replace each row's normalised phone by its keyed hash (server.lookup.phones)."""
    key = phone_key(conn)
    return [(phone_hash(key, phone), number) for phone, number in rows]


@dataclass(frozen=True)
class Kind:
    """How one kind of CSV maps onto its table; ``prepare`` turns the valid rows into the
    upsert's parameters inside the import's transaction (for values that need a key the
    database holds), where the rows are not stored as parsed."""

    columns: tuple[str, ...]
    parse: Callable[[_Row], Params]
    upsert: str
    prepare: Callable[[Connection, Sequence[Params]], Sequence[Params]] | None = None
    #: Which parameter is a site that must be registered (``sites``), if any.
    site_param: int | None = None


KINDS: Mapping[str, Kind] = {
    "health_code": Kind(
        ("id_number", "colour", "reason", "updated_at"),
        _health_code,
        "INSERT INTO health_codes (id_number, colour, reason, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (id_number) DO UPDATE SET colour = excluded.colour,"
        " reason = excluded.reason, updated_at = excluded.updated_at",
    ),
    "nat": Kind(
        ("id_number", "sampled_at", "result", "lab"),
        _nat,
        "INSERT INTO nat_results (id_number, sampled_at, result, lab) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (id_number, sampled_at) DO UPDATE SET result = excluded.result,"
        " lab = excluded.lab",
    ),
    "vaccination": Kind(
        ("id_number", "dose", "vaccinated_at", "vaccine"),
        _vaccination,
        "INSERT INTO vaccinations (id_number, dose, vaccinated_at, vaccine) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (id_number, dose) DO UPDATE SET vaccinated_at = excluded.vaccinated_at,"
        " vaccine = excluded.vaccine",
    ),
    "travel": Kind(
        ("id_number", "flagged", "area", "updated_at"),
        _travel,
        "INSERT INTO travel (id_number, flagged, area, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (id_number) DO UPDATE SET flagged = excluded.flagged,"
        " area = excluded.area, updated_at = excluded.updated_at",
    ),
    # Not a source: who is expected at which site (the people of its signed snapshot).
    "site_people": Kind(
        ("site", "id_number"),
        _site_person,
        "INSERT INTO site_people (site, id_number) VALUES (?, ?)"
        " ON CONFLICT (site, id_number) DO NOTHING",
        site_param=0,
    ),
    # Not a source table either: QR token → person for the health-code source, by SHA-256.
    "qr_token": Kind(
        ("token", "id_number", "expires_at"),
        _qr_token,
        "INSERT INTO qr_tokens (token_sha256, id_number, expires_at) VALUES (?, ?, ?)"
        " ON CONFLICT (token_sha256) DO UPDATE SET id_number = excluded.id_number,"
        " expires_at = excluded.expires_at",
    ),
    # Not a source: phone → person for the guard's lookup, by keyed hash only (never clear).
    "phones": Kind(
        ("id_number", "phone"),
        _phone,
        "INSERT INTO person_phones (phone_hash, id_number) VALUES (?, ?)"
        " ON CONFLICT (phone_hash) DO UPDATE SET id_number = excluded.id_number",
        prepare=_hash_phones,
    ),
}


def _kind(kind: str) -> Kind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ImportFormatError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}") from None


def check_header(kind: str, header: Sequence[str]) -> list[RowError]:
    """Problems with a header row (row 1): missing, unknown or repeated columns."""
    expected = _kind(kind).columns
    names = [h.strip() for h in header]
    errors = [RowError(1, c, "missing column") for c in expected if c not in names]
    errors += [RowError(1, c or "(empty)", "unknown column") for c in names if c not in expected]
    errors += [
        RowError(1, c, "repeated column")
        for i, c in enumerate(names)
        if c in expected and c in names[:i]
    ]
    return errors


def import_rows(
    conn: Connection,
    kind: str,
    rows: Iterable[tuple[int, Mapping[str, str]]],
    *,
    skip_bad: bool = False,
    source: str = "<rows>",
    prior_errors: Sequence[RowError] = (),
    create_sites: bool = False,
) -> ImportReport:
    """Validate numbered rows (``(row_number, {column: text})``) and upsert them.

    ``prior_errors`` are problems found while reading (rows that could not even be split
    into fields); they count as bad rows. With ``skip_bad`` false, any bad row means nothing
    is written. A site that is not registered is a bad row unless ``create_sites``.
    """
    spec = _kind(kind)
    report = ImportReport(kind, source, errors=list(prior_errors))
    report.rows = len({e.row for e in prior_errors})
    parsed: list[tuple[int, Params]] = []
    for number, values in rows:
        report.rows += 1
        row = _Row(number, values)
        params = spec.parse(row)
        if row.errors:
            report.errors.extend(row.errors)
        else:
            parsed.append((number, params))
    new_sites: set[str] = set()
    if spec.site_param is not None:
        parsed, new_sites = _check_sites(conn, spec.site_param, parsed, create_sites, report)
    good = [params for _, params in parsed]
    report.errors.sort(key=lambda e: e.row)
    bad_rows = len({e.row for e in report.errors})
    if report.errors and not skip_bad:
        report.skipped = report.rows
        return report
    report.skipped = bad_rows
    with durable(conn):
        conn.executemany(
            "INSERT INTO sites (site) VALUES (?) ON CONFLICT (site) DO NOTHING",
            [(site,) for site in sorted(new_sites)],
        )
        conn.executemany(spec.upsert, spec.prepare(conn, good) if spec.prepare else good)
    report.imported = len(good)
    return report


def _check_sites(
    conn: Connection,
    at: int,
    parsed: list[tuple[int, Params]],
    create: bool,
    report: ImportReport,
) -> tuple[list[tuple[int, Params]], set[str]]:
    """The rows whose site is registered, and the unknown sites to register (``create``);
    without ``create`` each row naming an unknown site becomes a row error."""
    known = {row[0] for row in conn.execute("SELECT site FROM sites")}
    unknown = {params[at] for _, params in parsed} - known
    if create or not unknown:
        return parsed, unknown
    report.errors.extend(
        RowError(number, "site", f"unknown site {params[at]!r} ({UNKNOWN_SITE_HINT})")
        for number, params in parsed
        if params[at] in unknown
    )
    return [(n, p) for n, p in parsed if p[at] not in unknown], set()


def _read_csv(kind: str, csv_path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[RowError]]:
    """Read a CSV file into numbered rows, plus header and field-count problems."""
    columns = _kind(kind).columns
    rows: list[tuple[int, dict[str, str]]] = []
    problems: list[RowError] = []
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                return [], [RowError(1, "-", "empty file: no header row")]
            problems = check_header(kind, header)
            if problems:
                return [], problems
            names = [h.strip() for h in header]
            for number, record in enumerate(reader, start=2):
                if not record:  # a blank line
                    continue
                if len(record) != len(names):
                    reason = f"expected {len(names)} fields, got {len(record)}"
                    problems.append(RowError(number, "-", reason))
                    continue
                values = dict(zip(names, record, strict=True))
                rows.append((number, {c: values[c] for c in columns}))
    except OSError as exc:
        raise ImportFormatError(f"{csv_path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{csv_path}: not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise ImportFormatError(f"{csv_path}: malformed CSV: {exc}") from exc
    return rows, problems


def import_csv(
    db_path: str | Path,
    kind: str,
    csv_path: str | Path,
    *,
    skip_bad: bool = False,
    create_sites: bool = False,
) -> ImportReport:
    """Import one CSV file of ``kind`` into the database at ``db_path``.

    Raises :class:`ImportFormatError` for an unknown kind or an unreadable file; row
    problems are reported in the returned :class:`ImportReport`. A bad header imports nothing,
    even with ``skip_bad``.
    """
    _kind(kind)
    csv_path = Path(csv_path)
    rows, problems = _read_csv(kind, csv_path)
    if any(p.row == 1 for p in problems):
        return ImportReport(kind, str(csv_path), errors=problems)
    with connect(db_path) as conn:
        report = import_rows(
            conn,
            kind,
            rows,
            skip_bad=skip_bad,
            source=str(csv_path),
            prior_errors=problems,
            create_sites=create_sites,
        )
    log.info(
        "imported %d of %d %s rows from %s (%d bad)",
        report.imported,
        report.rows,
        kind,
        csv_path,
        len({e.row for e in report.errors}),
    )
    return report
