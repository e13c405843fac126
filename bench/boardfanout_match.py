"""Which tap each board delivery was, and the latency figures of bench/board_fanout.py.

A ``tap`` event names its kiosk and the person's masked id. The taps process gives each
kiosk's successive taps people with distinct masked ids (:func:`unique_masks`), so (kiosk,
masked id) names one tap until the kiosk has cycled through every person; a delivery is
matched to the latest such tap sent before it arrived. A tap answered 200 is expected at
every open board that sees its site; what never arrives is dropped.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

from core.idnumbers import mask


class Watcher(Protocol):
    def sees(self, site: str) -> bool: ...


def unique_masks(ids: list[str]) -> list[int]:
    """Indexes into ``ids`` of people whose masked ids no one else in the list shares."""
    seen: dict[str, list[int]] = defaultdict(list)
    for n, id_number in enumerate(ids):
        seen[mask(id_number)].append(n)
    return sorted(found[0] for found in seen.values() if len(found) == 1)


def sites_of(kiosks: list[tuple[str, str]], sites: int) -> dict[str, str]:
    """Each kiosk's site, as bench/fleetload_setup.py registered them (``i mod sites``)."""
    return {device_id: f"site-{n % sites:02d}" for n, (device_id, _) in enumerate(kiosks)}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def deliveries(
    sent: list[list[Any]],
    masks: list[str],
    sites: dict[str, str],
    boards: Sequence[Watcher],
    opened: list[int],
    received: dict[str, Any],
) -> dict[str, Any]:
    """Delivered, dropped, duplicated and unmatched deliveries; latency from the tap's send
    and from the server's publish (``at``) to the board, p50/p99/max in ms."""
    by_key: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
    for n, (device_id, person, at, status) in enumerate(sent):
        if status == 200:
            by_key[(device_id, masks[person])].append((float(at), n))
    for times in by_key.values():
        times.sort()
    got: set[tuple[int, int]] = set()
    latencies, from_publish = [], []
    duplicates = unmatched = 0
    for board, device_id, masked, at, arrived in received["arrivals"]:
        times = by_key.get((device_id, masked), [])
        i = bisect.bisect_right(times, (float(arrived), len(sent))) - 1
        if i < 0:
            unmatched += 1
            continue
        key = (int(board), times[i][1])
        if key in got:
            duplicates += 1
            continue
        got.add(key)
        latencies.append(float(arrived) - times[i][0])
        from_publish.append(float(arrived) - float(at))
    expected = sum(
        1
        for device_id, _, _, status in sent
        if status == 200
        for b in opened
        if boards[b].sees(sites[device_id])
    )
    return {
        "taps_sent": len(sent),
        "taps_failed": sum(1 for s in sent if s[3] != 200),
        "expected": expected,
        "delivered": len(got),
        "dropped": expected - len(got),
        "duplicates": duplicates,
        "unmatched": unmatched,
        "latency": summary(latencies),
        "publish_to_board": summary(from_publish),
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": ms(percentile(values, 0.50)),
        "p99_ms": ms(percentile(values, 0.99)),
        "max_ms": ms(max(values, default=math.nan)),
    }
