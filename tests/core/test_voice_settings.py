"""The voice's remote settings (core/settings.py): ``voice.pack``, ``voice.volume_schedule``
and ``voice.languages``. The server refuses at ``config set`` what a kiosk would refuse from
its heartbeat, both through :func:`check_remote_setting`, so every check is pinned here."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from core.errors import SettingError
from core.settings import (
    MAX_WINDOWS,
    REMOTE_KEYS,
    REMOTE_SETTINGS,
    check_languages,
    check_pack_setting,
    check_remote_setting,
    check_volume_schedule,
    remote_number,
)
from core.voicepack import pack_sha256

SHA = pack_sha256(b"pack")


def test_the_voice_keys_are_settable_remotely_beside_the_numbers() -> None:
    assert {"voice.pack", "voice.volume_schedule", "voice.languages"} <= REMOTE_KEYS
    assert set(REMOTE_SETTINGS) <= REMOTE_KEYS
    with pytest.raises(SettingError, match=r"settable: .*voice\.languages.*voice\.volume_sched"):
        check_remote_setting("voice.clips", {})


def test_remote_number_is_for_the_numeric_keys_only() -> None:
    key = next(iter(REMOTE_SETTINGS))
    assert remote_number(key, REMOTE_SETTINGS[key][0]) == REMOTE_SETTINGS[key][0]
    with pytest.raises(SettingError, match="not a numeric remote setting"):
        remote_number("voice.pack", SHA)


# -- voice.pack -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [SHA, ""])
def test_a_pack_is_a_sha256_or_nothing(value: str) -> None:
    """ "" is a value, not a removal: a device set to "" hears no pack even when its site
    has one (removing the key with null falls back to the site's)."""
    assert check_pack_setting(value) == value
    assert check_remote_setting("voice.pack", value) == value


@pytest.mark.parametrize(
    "value", [SHA.upper(), SHA[:-1], SHA + "0", " " + SHA, SHA + "\n", None, 0, [SHA], True]
)
def test_anything_else_is_not_a_pack(value: object) -> None:
    with pytest.raises(SettingError, match=r"voice\.pack: a pack's SHA-256"):
        check_remote_setting("voice.pack", value)


# -- voice.volume_schedule ------------------------------------------------------------------

NIGHT = {"start": "22:00", "end": "07:00", "gain_db": -10}


def test_a_schedule_becomes_windows_of_start_end_gain() -> None:
    lunch = {"start": "12:00", "end": "13:30", "gain_db": -6.5}
    assert check_volume_schedule([NIGHT, lunch]) == (
        ("22:00", "07:00", -10.0),
        ("12:00", "13:30", -6.5),
    )
    assert check_remote_setting("voice.volume_schedule", []) == ()


@pytest.mark.parametrize("gain", [-20, 0, -20.0, 0.0, -0.5])
def test_gains_from_minus_40_to_0_are_accepted(gain: float) -> None:
    ((_, _, got),) = check_volume_schedule([{**NIGHT, "gain_db": gain}])
    assert got == float(gain) and isinstance(got, float)


@pytest.mark.parametrize("edge", ["00:00", "23:59", "09:05"])
def test_times_are_hh_mm_of_one_day(edge: str) -> None:
    assert check_volume_schedule([{**NIGHT, "start": edge, "end": edge}])[0][:2] == (edge, edge)


@pytest.mark.parametrize("value", [{"start": "22:00"}, NIGHT, "22:00-07:00", None, 3])
def test_a_schedule_is_a_list(value: object) -> None:
    with pytest.raises(SettingError, match=f"a list of at most {MAX_WINDOWS} windows"):
        check_volume_schedule(value)


def test_a_schedule_has_at_most_max_windows() -> None:
    assert len(check_volume_schedule([NIGHT] * MAX_WINDOWS)) == MAX_WINDOWS
    with pytest.raises(SettingError, match="at most"):
        check_volume_schedule([NIGHT] * (MAX_WINDOWS + 1))


@pytest.mark.parametrize(
    "window",
    [
        {"start": "22:00", "end": "07:00"},
        {**NIGHT, "days": "mon"},
        {"from": "22:00", "end": "07:00", "gain_db": -10},
        ["22:00", "07:00", -10],
        "22:00-07:00",
    ],
)
def test_a_window_has_exactly_start_end_and_gain(window: object) -> None:
    with pytest.raises(SettingError, match=r"\[1\]: an object with exactly start, end"):
        check_volume_schedule([NIGHT, window])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("start", "24:00"),
        ("start", "7:00"),
        ("start", "07:60"),
        ("end", "07:00:00"),
        ("end", "0700"),
        ("end", " 07:00"),
        ("end", "07:00\n"),
        ("start", 2200),
        ("end", None),
    ],
)
def test_times_that_are_not_hh_mm_are_refused(field: str, value: object) -> None:
    with pytest.raises(SettingError, match=rf"\[0\]\.{field}: \"HH:MM\""):
        check_volume_schedule([{**NIGHT, field: value}])


@pytest.mark.parametrize(
    "gain", [1, 0.1, -20.5, -40, -100, float("nan"), float("-inf"), True, False, "-10", None]
)
def test_gains_outside_minus_40_to_0_or_not_numbers_are_refused(gain: Any) -> None:
    """Quieter only (a louder prompt is a loudness setting); a bool is not a number."""
    with pytest.raises(SettingError, match=r"\[0\]\.gain_db: a number in \[-20\.0, 0\.0\]"):
        check_remote_setting("voice.volume_schedule", [{**NIGHT, "gain_db": gain}])


# -- voice.languages ------------------------------------------------------------------------


def test_languages_map_card_types_to_a_language_or_chinese_only() -> None:
    value = {"I": "en", "Y": "eng", "J": ""}
    got = check_remote_setting("voice.languages", value)
    assert got == value and isinstance(got, MappingProxyType)
    assert check_languages({}) == {}


def test_checked_languages_cannot_be_changed_afterwards() -> None:
    got = check_languages({"I": "en"})
    with pytest.raises(TypeError):
        got["I"] = "fr"  # type: ignore[index]


@pytest.mark.parametrize("value", [[["I", "en"]], "I=en", None, ("I", "en")])
def test_languages_are_an_object(value: object) -> None:
    with pytest.raises(SettingError, match=r"voice\.languages: an object"):
        check_languages(value)


@pytest.mark.parametrize("card", ["resident", "i", "A", "", "IJ"])
def test_only_i_y_and_j_cards_hear_a_second_language(card: str) -> None:
    with pytest.raises(SettingError, match=f"card type {card!r} is not one of I, Y, J"):
        check_languages({card: "en"})


@pytest.mark.parametrize("language", ["EN", "e", "engl", "en-US", "en ", None, 1, ["en"]])
def test_a_language_is_a_short_lower_case_code(language: object) -> None:
    with pytest.raises(SettingError, match=r"voice\.languages\[I\]: a language code or \"\""):
        check_languages({"J": "", "I": language})
