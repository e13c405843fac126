"""Canonical JSON bytes and remote-setting bounds: both ends must agree exactly."""

from __future__ import annotations

import pytest

from core.canonical import canonical_json, canonical_sha256
from core.errors import SettingError
from core.settings import REMOTE_SETTINGS, check_remote_setting


def test_canonical_json_is_the_documented_encoding() -> None:
    value = {"b": 1, "a": ["绿码", 1.5, None, True], "c": {"z": 0, "y": "x"}}
    assert (
        canonical_json(value) == '{"a":["绿码",1.5,null,true],"b":1,"c":{"y":"x","z":0}}'.encode()
    )
    assert canonical_sha256({}) == (
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )


@pytest.mark.parametrize("key", sorted(REMOTE_SETTINGS))
def test_bounds_are_inclusive(key: str) -> None:
    low, high = REMOTE_SETTINGS[key]
    assert check_remote_setting(key, low) == low
    assert check_remote_setting(key, str(high)) == high
    with pytest.raises(SettingError, match="must be in"):
        check_remote_setting(key, high * 2)


@pytest.mark.parametrize("value", [True, None, "fast", [1], float("nan")])
def test_non_numbers_are_refused(value: object) -> None:
    with pytest.raises(SettingError):
        check_remote_setting("verify.deadline_s", value)


def test_unknown_settings_list_the_settable_ones() -> None:
    with pytest.raises(SettingError, match=r"verify\.deadline_s"):
        check_remote_setting("gpio.relay_pin", 5)
