"""Which wave of a rollout a kiosk falls in: a fixed percentile per (rollout, kiosk).

A kiosk's percentile is the first 8 bytes of ``sha256("<rollout id>:<device id>")`` read as
a fraction of 2**64, times 100: deterministic (every server process, every evaluation agrees
without storing anything), uniform over the fleet, and different for each rollout (the same
unlucky 1 % of kiosks do not get every first wave). Wave ``i`` holds the kiosks whose
percentile is in ``[waves[i-1], waves[i])`` (``[0, waves[0])`` for the first), so wave
sizes are proportional to the steps of ``waves``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import pairwise

from core.errors import SettingError


def percentile(rollout_id: int, device_id: str) -> float:
    """The kiosk's place in this rollout, in ``[0, 100)``."""
    digest = hashlib.sha256(f"{rollout_id}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def wave_of(waves: Sequence[float], place: float) -> int:
    """The index of the wave holding a kiosk at percentile ``place``."""
    for index, bound in enumerate(waves):
        if place < bound:
            return index
    return len(waves) - 1  # waves end at 100 and place < 100; kept for safety


def band(waves: Sequence[float], index: int) -> tuple[float, float]:
    """The percentiles ``[from, to)`` of wave ``index``."""
    return (waves[index - 1] if index else 0.0, waves[index])


def in_open_wave(waves: Sequence[float], current: int, rollout_id: int, device_id: str) -> bool:
    """Whether the kiosk is in waves ``0..current`` (it is offered the version)."""
    return percentile(rollout_id, device_id) < waves[min(current, len(waves) - 1)]


def check_waves(waves: Sequence[float]) -> list[float]:
    """Waves as stored: strictly increasing percents ending at 100."""
    out = [float(w) for w in waves]
    if not out or any(b <= a for a, b in pairwise(out)):
        raise SettingError("waves must be strictly increasing percents, e.g. 1,10,100")
    if out[0] <= 0 or out[-1] != 100.0:
        raise SettingError("waves are percents above 0 and the last must be 100")
    return out
