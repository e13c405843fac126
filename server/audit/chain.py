"""Per-device chain verification over the stored rows (``GET /v1/audit/devices/{id}/chain``).

Ingestion checks each event's hash and link once, when it arrives, and keeps the verdict in
``chain_ok``; this check runs again over what the database holds *now*, so a row changed or
removed since (by hand, by a restore gone wrong) shows. For each journal epoch, in ``seq``
order: the event's ``hash`` is recomputed from its stored fields (core.audit.hash_event), its
``prev_hash`` must be the stored predecessor's ``hash`` (the genesis hash for seq 1), and
ingestion's own verdict must not be a break. A seq missing below the epoch's ``acked_seq``
was stored once (the high-water mark says so) and is gone: it is reported as missing.
Events before the first stored one were removed by retention (``kiosk server prune``), which
is not a fault; the first stored event's link was checked on arrival (``chain_ok``).

The stored row is not the bytes the kiosk hashed: ``REAL`` columns hold ``5`` as ``5.0``,
and a sender may have left out fields that are null. The kiosk journal (device/recording)
writes every field, nulls included, so that form is tried first and matches at once; the
other spellings of the same values are tried only when it does not, so only a real change
reads as a break.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.audit import GENESIS_HASH, hash_event

#: Rows per read: the check holds one page and one summary per epoch, whatever the device's
#: history.
PAGE = 2000

_COLUMNS = (
    "epoch", "seq", "wall_time", "mono_ns", "boot_id", "clock_trusted", "kind", "outcome",
    "prompt", "masked_id", "pseudonym", "offline", "cache_age_s", "latency_ms", "detail",
    "prev_hash", "hash", "chain_ok",
)  # fmt: skip
_OPTIONAL = ("outcome", "prompt", "masked_id", "pseudonym", "cache_age_s", "latency_ms")

PROGRESS = "SELECT epoch, acked_seq FROM audit_progress WHERE device_id = ?"
CONFLICTS = "SELECT epoch, count(*) FROM audit_conflicts WHERE device_id = ? GROUP BY epoch"


def page_query(device_id: str, after: tuple[str, int] | None) -> tuple[str, tuple[Any, ...]]:
    """One page of the device's events in ``(epoch, seq)`` order, after ``after``."""
    sql = f"SELECT {', '.join(_COLUMNS)} FROM audit_events WHERE device_id = ?"
    params: tuple[Any, ...] = (device_id,)
    if after is not None:
        sql += " AND (epoch, seq) > (?, ?)"
        params += after
    return sql + " ORDER BY epoch, seq LIMIT ?", (*params, PAGE)


def last_position(rows: Sequence[Sequence[Any]]) -> tuple[str, int]:
    """Where the page after ``rows`` starts."""
    return str(rows[-1][0]), int(rows[-1][1])


def hash_matches(row: Sequence[Any]) -> bool:
    """Whether some faithful spelling of the stored event hashes to its stored ``hash``."""
    stored = dict(zip(_COLUMNS, row, strict=True))
    return any(hash_event(candidate) == stored["hash"] for candidate in _spellings(stored))


def _spellings(stored: dict[str, Any]) -> Iterator[dict[str, Any]]:
    base: dict[str, Any] = {
        "seq": int(stored["seq"]),
        "wall_time": stored["wall_time"],
        "mono_ns": int(stored["mono_ns"]),
        "boot_id": stored["boot_id"],
        "clock_trusted": bool(stored["clock_trusted"]),
        "kind": stored["kind"],
        "offline": bool(stored["offline"]),
        "prev_hash": stored["prev_hash"],
        "detail": json.loads(stored["detail"]) if stored["detail"] else {},
        **{name: stored[name] for name in _OPTIONAL},
    }
    if stored["epoch"]:
        base["epoch"] = stored["epoch"]
    yield base
    numbers = [_number_forms(base[n]) for n in ("cache_age_s", "latency_ms")]
    details = [base["detail"], None] if base["detail"] == {} else [base["detail"]]
    epochs = [False, True] if not stored["epoch"] else [False]
    for cache_age, latency, detail, empty_epoch, drop_nulls in itertools.product(
        *numbers, details, epochs, (False, True)
    ):
        candidate = {**base, "cache_age_s": cache_age, "latency_ms": latency, "detail": detail}
        if empty_epoch:
            candidate["epoch"] = ""
        if drop_nulls:
            candidate = {k: v for k, v in candidate.items() if v is not None}
        yield candidate


def _number_forms(value: Any) -> list[Any]:
    """A stored ``REAL``, and the integer the kiosk may have written for it."""
    if isinstance(value, float) and value.is_integer():
        return [value, int(value)]
    return [value]


@dataclass
class _Epoch:
    """What the check knows of one journal epoch so far."""

    epoch: str
    acked_seq: int
    conflicts: int
    events: int = 0
    first_seq: int | None = None
    last: tuple[int, str] | None = None  # (seq, hash) of the previous stored event
    breaks: list[int] = field(default_factory=list)
    missing: list[list[int]] = field(default_factory=list)

    def feed(self, row: Sequence[Any]) -> None:
        seq, prev_hash, hash_, chain_ok = int(row[1]), row[15], row[16], row[17]
        self.events += 1
        if self.first_seq is None:
            self.first_seq = seq
            linked = prev_hash == GENESIS_HASH if seq == 1 else True  # pruned before: see below
        elif self.last is not None and self.last[0] == seq - 1:
            linked = prev_hash == self.last[1]
        else:
            self._gap(self.last[0] + 1 if self.last else 1, seq - 1)
            linked = True  # its predecessor is not here to compare with: chain_ok says
        if not linked or chain_ok == 0 or not hash_matches(row):
            self.breaks.append(seq)
        self.last = (seq, hash_)

    def _gap(self, first: int, last: int) -> None:
        """Seqs ``first..last`` are not stored: missing as far as the mark says they were."""
        last = min(last, self.acked_seq)
        if first <= last:
            self.missing.append([first, last])

    def finish(self) -> dict[str, Any]:
        if self.last is not None:
            self._gap(self.last[0] + 1, self.acked_seq)
        return {
            "epoch": self.epoch,
            "events": self.events,
            "first_seq": self.first_seq,
            "last_seq": self.last[0] if self.last else None,
            "acked_seq": self.acked_seq,
            "breaks": self.breaks,
            "missing": self.missing,
            "conflicts": self.conflicts,
        }


class ChainCheck:
    """Fed the device's rows page by page (:func:`page_query`), in order; then :meth:`report`."""

    def __init__(
        self, device_id: str, progress: Sequence[Sequence[Any]], conflicts: Sequence[Sequence[Any]]
    ) -> None:
        self.device_id = device_id
        self._acked = {str(r[0]): int(r[1]) for r in progress}
        self._conflicts = {str(r[0]): int(r[1]) for r in conflicts}
        self._done: list[dict[str, Any]] = []
        self._current: _Epoch | None = None

    def feed(self, rows: Sequence[Sequence[Any]]) -> None:
        """Check one page of rows (CPU work: the server runs it off the event loop)."""
        for row in rows:
            epoch = str(row[0])
            if self._current is None or self._current.epoch != epoch:
                self._close()
                acked, conflicts = self._acked.get(epoch, 0), self._conflicts.pop(epoch, 0)
                self._current = _Epoch(epoch, acked, conflicts)
            self._current.feed(row)

    def _close(self) -> None:
        if self._current is not None:
            self._done.append(self._current.finish())
            self._current = None

    def report(self) -> dict[str, Any]:
        """``{"device_id", "events", "ok", "breaks", "conflicts", "missing", "epochs"}``.

        ``ok``: no break, no conflicting version, nothing missing. ``breaks`` are seq
        numbers, epoch by epoch in ``epochs`` order; ``missing`` counts events.
        """
        self._close()
        for epoch, count in sorted(self._conflicts.items()):  # epochs with no event left
            self._done.append(_Epoch(epoch, self._acked.get(epoch, 0), count).finish())
        self._conflicts.clear()
        epochs = self._done
        breaks = [seq for e in epochs for seq in e["breaks"]]
        conflicts = sum(e["conflicts"] for e in epochs)
        missing = sum(b - a + 1 for e in epochs for a, b in e["missing"])
        return {
            "device_id": self.device_id,
            "events": sum(e["events"] for e in epochs),
            "ok": not breaks and not conflicts and not missing,
            "breaks": breaks,
            "conflicts": conflicts,
            "missing": missing,
            "epochs": epochs,
        }
