"""Settings an admin may change on running kiosks, and their bounds.

``kiosk provision config set`` refuses what kiosks would refuse, and the kiosk re-checks
what its heartbeat brings: both call :func:`check_remote_setting`. Everything else needs
the kiosk's local file.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from core.errors import SettingError

#: key → (lowest, highest) accepted value.
REMOTE_SETTINGS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "verify.deadline_s": (0.05, 2.5),
        "heartbeat.interval_s": (5.0, 3600.0),
        "upload.interval_s": (0.5, 600.0),
    }
)


def check_remote_setting(key: str, value: object) -> float:
    """The value as a number within its bounds, or :class:`SettingError` saying what is wrong."""
    bounds = REMOTE_SETTINGS.get(key)
    if bounds is None:
        raise SettingError(
            f"{key!r} cannot be set remotely (settable: {', '.join(sorted(REMOTE_SETTINGS))})"
        )
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SettingError(f"{key}: expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError as exc:
        raise SettingError(f"{key}: expected a number, got {value!r}") from exc
    if not bounds[0] <= number <= bounds[1]:
        raise SettingError(f"{key}: must be in [{bounds[0]}, {bounds[1]}], got {number}")
    return number
