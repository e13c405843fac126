"""Wave membership: fixed per (rollout, kiosk), proportional to the wave steps, different per
rollout; waves are increasing percents ending at 100."""

from __future__ import annotations

import pytest

from core.errors import SettingError
from server.releases.waves import band, check_waves, in_open_wave, percentile, wave_of

IDS = [f"k-{n:010x}" for n in range(20_000)]


def test_a_kiosks_place_is_fixed_and_in_range() -> None:
    places = [percentile(7, d) for d in IDS[:100]]
    assert places == [percentile(7, d) for d in IDS[:100]]
    assert all(0 <= p < 100 for p in places)


def test_waves_hold_shares_of_kiosks_proportional_to_their_steps() -> None:
    waves = [1.0, 10.0, 100.0]
    sizes = [0, 0, 0]
    for device_id in IDS:
        sizes[wave_of(waves, percentile(3, device_id))] += 1
    # 1 %, 9 %, 90 % of 20,000: binomial spread is ~14, 40, 42 kiosks (3 sigma well inside)
    assert abs(sizes[0] - 200) < 60
    assert abs(sizes[1] - 1800) < 150
    assert abs(sizes[2] - 18000) < 150
    open_now = sum(in_open_wave(waves, 1, 3, d) for d in IDS)
    assert open_now == sizes[0] + sizes[1]


def test_another_rollout_picks_another_first_wave() -> None:
    first = {d for d in IDS if in_open_wave([1.0, 100.0], 0, 1, d)}
    second = {d for d in IDS if in_open_wave([1.0, 100.0], 0, 2, d)}
    assert first and second
    assert len(first & second) < len(first) // 4  # independent: ~1 % overlap expected


def test_the_last_wave_holds_everyone() -> None:
    assert all(in_open_wave([5.0, 100.0], 1, 9, d) for d in IDS[:500])
    assert band([1.0, 10.0, 100.0], 0) == (0.0, 1.0)
    assert band([1.0, 10.0, 100.0], 2) == (10.0, 100.0)


@pytest.mark.parametrize("waves", [[], [10, 5, 100], [1, 10], [0, 100], [50, 50, 100]])
def test_bad_waves_are_refused(waves: list[float]) -> None:
    with pytest.raises(SettingError):
        check_waves(waves)
    assert check_waves([1, 10, 100]) == [1.0, 10.0, 100.0]
