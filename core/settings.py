"""Settings an admin may change on running kiosks, and their bounds.

``kiosk provision config set`` refuses what kiosks would refuse, and the kiosk re-checks
what its heartbeat brings: both call :func:`check_remote_setting`. Everything else needs
the kiosk's local file.

Most are numbers. The voice's are not: ``voice.pack`` names a signed voice pack by its
SHA-256 ("" = none, overriding a pack a lower layer set), ``voice.volume_schedule`` is a
list of quieter windows and ``voice.languages`` maps a card type to the second language its
holder hears. They are layered like the numbers (fleet < site < device), which is how a site
gets its own schedule and languages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from core.errors import SettingError

#: key → (lowest, highest) accepted value.
REMOTE_SETTINGS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "verify.deadline_s": (0.05, 2.5),
        "heartbeat.interval_s": (5.0, 3600.0),
        "upload.interval_s": (0.5, 600.0),
    }
)

#: One quieter window: start and end as local "HH:MM", and the gain in dB (≤ 0).
VolumeWindowValue = tuple[str, str, float]
RemoteValue = float | str | tuple[VolumeWindowValue, ...] | Mapping[str, str]

HHMM_PATTERN: Final = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
#: A second language: an ISO 639-1/2 code, or "" for Chinese only.
LANGUAGE_PATTERN: Final = r"^([a-z]{2,3})?$"
#: Card types whose holders may hear a second language (foreigners' I/Y, HK/Macao/TW J).
SECOND_LANGUAGE_CARDS: Final = frozenset({"I", "Y", "J"})
#: Quieter, never silent: −20 dB is a tenth of the amplitude, plainly quieter at night, and
#: a remote setting cannot mute a gate whose citizens must hear their prompt.
GAIN_DB_RANGE: Final = (-20.0, 0.0)
MAX_WINDOWS: Final = 24
_HHMM = re.compile(HHMM_PATTERN)
_LANGUAGE = re.compile(LANGUAGE_PATTERN)
_HEX64 = re.compile(r"[0-9a-f]{64}")


def check_remote_setting(key: str, value: object) -> RemoteValue:
    """The value in its checked form (a number within its bounds for numeric keys), or
    :class:`SettingError` saying what is wrong."""
    if key in REMOTE_SETTINGS:
        return remote_number(key, value)
    check = _STRUCTURED.get(key)
    if check is None:
        settable = sorted([*REMOTE_SETTINGS, *_STRUCTURED])
        raise SettingError(f"{key!r} cannot be set remotely (settable: {', '.join(settable)})")
    return check(value)


def remote_number(key: str, value: object) -> float:
    """A numeric setting's value within its bounds, or :class:`SettingError`."""
    bounds = REMOTE_SETTINGS.get(key)
    if bounds is None:
        raise SettingError(f"{key!r} is not a numeric remote setting")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SettingError(f"{key}: expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError as exc:
        raise SettingError(f"{key}: expected a number, got {value!r}") from exc
    if not bounds[0] <= number <= bounds[1]:
        raise SettingError(f"{key}: must be in [{bounds[0]}, {bounds[1]}], got {number}")
    return number


def check_pack_setting(value: object) -> str:
    """``voice.pack``: a pack's SHA-256, or "" for no pack."""
    if not isinstance(value, str) or not (value == "" or _HEX64.fullmatch(value)):
        raise SettingError(f'voice.pack: a pack\'s SHA-256 (64 hex digits) or "", got {value!r}')
    return value


def check_volume_schedule(value: object) -> tuple[VolumeWindowValue, ...]:
    """``voice.volume_schedule``: ``[{"start": "22:00", "end": "07:00", "gain_db": -10}]``."""
    if not isinstance(value, list) or len(value) > MAX_WINDOWS:
        raise SettingError(f"voice.volume_schedule: a list of at most {MAX_WINDOWS} windows")
    return tuple(_window(i, item) for i, item in enumerate(value))


def _window(index: int, item: object) -> VolumeWindowValue:
    where = f"voice.volume_schedule[{index}]"
    if not isinstance(item, dict) or set(item) != {"start", "end", "gain_db"}:
        raise SettingError(f"{where}: an object with exactly start, end and gain_db")
    start, end, gain = item["start"], item["end"], item["gain_db"]
    for name, hhmm in (("start", start), ("end", end)):
        if not isinstance(hhmm, str) or not _HHMM.fullmatch(hhmm):
            raise SettingError(f'{where}.{name}: "HH:MM" (00:00-23:59), got {hhmm!r}')
    low, high = GAIN_DB_RANGE
    if isinstance(gain, bool) or not isinstance(gain, int | float) or not low <= gain <= high:
        raise SettingError(f"{where}.gain_db: a number in [{low}, {high}], got {gain!r}")
    return (start, end, float(gain))


def check_languages(value: object) -> Mapping[str, str]:
    """``voice.languages``: card type (I, Y, J) → second language ("" = Chinese only)."""
    if not isinstance(value, dict):
        raise SettingError('voice.languages: an object such as {"I": "en", "J": ""}')
    out: dict[str, str] = {}
    for card, language in value.items():
        if card not in SECOND_LANGUAGE_CARDS:
            raise SettingError(f"voice.languages: card type {card!r} is not one of I, Y, J")
        if not isinstance(language, str) or not _LANGUAGE.fullmatch(language):
            raise SettingError(f'voice.languages[{card}]: a language code or "", got {language!r}')
        out[card] = language
    return MappingProxyType(out)


_STRUCTURED: Mapping[str, Callable[[object], RemoteValue]] = MappingProxyType(
    {
        "voice.pack": check_pack_setting,
        "voice.volume_schedule": check_volume_schedule,
        "voice.languages": check_languages,
    }
)
#: The remote settings that belong to the voice (device.acting.packs.RemoteVoice).
VOICE_KEYS: Final = tuple(_STRUCTURED)
#: Every key an admin may set remotely.
REMOTE_KEYS: Final = frozenset([*REMOTE_SETTINGS, *VOICE_KEYS])
