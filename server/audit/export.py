"""The audit export's bytes: CSV or a JSON array, written a page of events at a time.

Each encoder turns one page (a list of :func:`server.audit.query.event` answers) into the
bytes to send, so the export streams however many events match without holding them.

CSV: the columns of :data:`server.audit.query.FIELDS`, a header first, ``detail`` as JSON,
booleans as ``true``/``false``, null as an empty cell. A text cell starting with ``=``, ``+``,
``-``, ``@``, tab or carriage return gets a leading ``'``: a spreadsheet would otherwise run
it as a formula (a kiosk's prompt text or a site name is not trusted input).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from server.audit.query import FIELDS

Format = Literal["csv", "json"]
MEDIA_TYPES: dict[Format, str] = {"csv": "text/csv", "json": "application/json"}
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


class Encoder(Protocol):
    """Bytes for the start, each page, and the end of an export."""

    def start(self) -> bytes: ...

    def page(self, events: Sequence[dict[str, Any]]) -> bytes: ...

    def end(self) -> bytes: ...


class CsvEncoder:
    """RFC 4180 CSV (``\\r\\n`` line ends), UTF-8 with no byte-order mark."""

    def start(self) -> bytes:
        return self._rows([list(FIELDS)])

    def page(self, events: Sequence[dict[str, Any]]) -> bytes:
        return self._rows([[_cell(e[name]) for name in FIELDS] for e in events])

    def end(self) -> bytes:
        return b""

    @staticmethod
    def _rows(rows: list[list[str]]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerows(rows)
        return buffer.getvalue().encode("utf-8")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


class JsonEncoder:
    """One JSON array of events, one event per line."""

    def __init__(self) -> None:
        self._first = True

    def start(self) -> bytes:
        return b"["

    def page(self, events: Sequence[dict[str, Any]]) -> bytes:
        parts = []
        for e in events:
            parts.append(("\n" if self._first else ",\n") + json.dumps(e, ensure_ascii=False))
            self._first = False
        return "".join(parts).encode("utf-8")

    def end(self) -> bytes:
        return b"]\n" if self._first else b"\n]\n"


def encoder(fmt: Format) -> Encoder:
    """The encoder for ``fmt``."""
    return CsvEncoder() if fmt == "csv" else JsonEncoder()
