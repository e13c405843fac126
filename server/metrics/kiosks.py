"""Kiosks' own counters (``Heartbeat.counters``) as per-site totals that only grow.

A kiosk counts from zero each time its agent starts (a new ``boot_id``). The heartbeat
folds each report into the kiosk's row of ``kiosk_counters`` (migration 16): the same boot
replaces ``current``; a new boot (or, defensively, a count that went down) first adds the
old ``current`` to ``carried``. A kiosk's lifetime total is ``carried + current``, and a
site's is the sum over its kiosks, read at scrape time (:func:`site_totals`). The fold is a
read and one compare-and-set write keyed on what was read, so concurrent heartbeats in
several server processes never carry a boot twice.

Counters travel as flat ``name → number`` maps (:func:`flatten`): ``taps.<outcome>``,
``offline_decisions``, ``reader_errors``, ``latency.<i>`` (prompt latency bucket ``i`` of
``core.wire.PROMPT_LATENCY_BOUNDS_S``, the last one above every bound) and ``latency_sum``.
A kiosk moved to another site takes its totals along (the old site's totals drop once).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from core import wire
from server.storage.connection import Connection

Flat = dict[str, float]
#: Compare-and-set attempts before a heartbeat's counters are left for its next beat.
ATTEMPTS = 3


def flatten(counters: wire.KioskCounters) -> Flat:
    """The counters (not the backlog level) as one flat map."""
    flat: Flat = {f"taps.{outcome}": float(n) for outcome, n in counters.taps.items() if n}
    if counters.offline_decisions:
        flat["offline_decisions"] = float(counters.offline_decisions)
    if counters.reader_errors:
        flat["reader_errors"] = float(counters.reader_errors)
    latency = counters.prompt_latency
    for i, n in enumerate(latency.buckets[: len(wire.PROMPT_LATENCY_BOUNDS_S) + 1]):
        if n:
            flat[f"latency.{i}"] = float(n)
    if latency.sum_s:
        flat["latency_sum"] = float(latency.sum_s)
    return flat


def add(a: Mapping[str, float], b: Mapping[str, float]) -> Flat:
    """Key-wise sum."""
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0.0) + value
    return out


def _went_back(old: Mapping[str, float], new: Mapping[str, float]) -> bool:
    return any(new.get(key, 0.0) < value for key, value in old.items())


def _dumps(flat: Flat) -> str:
    return json.dumps(flat, sort_keys=True, separators=(",", ":"))


def fold(
    conn: Connection, device_id: str, boot_id: str, counters: wire.KioskCounters, now: str
) -> None:
    """Fold one heartbeat's counters into the kiosk's row (see the module docstring)."""
    new = flatten(counters)
    backlog = counters.journal_backlog
    for _ in range(ATTEMPTS):
        row = conn.execute(
            "SELECT boot_id, current, carried FROM kiosk_counters WHERE device_id = ?",
            (device_id,),
        ).fetchone()
        if row is None:
            done = conn.execute(
                "INSERT INTO kiosk_counters (device_id, boot_id, current, carried, backlog,"
                " updated_at) VALUES (?, ?, ?, '{}', ?, ?) ON CONFLICT (device_id) DO NOTHING",
                (device_id, boot_id, _dumps(new), backlog, now),
            )
        else:
            old_boot, current_text, carried_text = str(row[0]), str(row[1]), str(row[2])
            current, carried = json.loads(current_text), json.loads(carried_text)
            if old_boot != boot_id or _went_back(current, new):
                carried = add(carried, current)
            done = conn.execute(
                "UPDATE kiosk_counters SET boot_id = ?, current = ?, carried = ?, backlog = ?,"
                " updated_at = ? WHERE device_id = ? AND boot_id = ? AND current = ?",
                (
                    boot_id,
                    _dumps(new),
                    _dumps(carried),
                    backlog,
                    now,
                    device_id,
                    old_boot,
                    current_text,
                ),
            )
        if done.rowcount == 1:
            return


@dataclass
class SiteTotals:
    """One site's kiosk counters summed over its kiosks."""

    counts: Flat = field(default_factory=dict)
    backlog: int = 0
    kiosks: int = 0


def site_totals(conn: Connection) -> dict[str, SiteTotals]:
    """Every site's lifetime totals (``carried + current`` of each of its kiosks); the
    journal backlog counts kiosks that are not revoked only."""
    rows = conn.execute(
        "SELECT d.site, d.status, k.current, k.carried, k.backlog"
        " FROM kiosk_counters k JOIN devices d ON d.device_id = k.device_id"
    ).fetchall()
    sites: dict[str, SiteTotals] = {}
    for site, status, current, carried, backlog in rows:
        totals = sites.setdefault(str(site), SiteTotals())
        totals.counts = add(totals.counts, add(json.loads(carried), json.loads(current)))
        if status != "revoked":
            totals.backlog += int(backlog)
            totals.kiosks += 1
    return sites
