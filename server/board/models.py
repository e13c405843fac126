"""The shapes of the board API's answers, for the OpenAPI document (the handlers build the
same fields as plain dicts in server/board/kiosks.py; a test holds the two equal)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import Struct

Part = Literal["ok", "fault", "absent"]


class Tap(Struct):
    """A decided tap as the audit trail holds it: masked id only."""

    device_id: str
    site: str
    gate: str
    at: str
    outcome: str | None
    masked_id: str | None
    reasons: list[str]
    offline: bool


class KioskHealth(Struct):
    """From the kiosk's last heartbeat. Parts: ``ok``, ``fault`` or ``absent`` (not reported)."""

    reader: Part
    camera: Part
    audio: Part
    clock_trusted: bool | None
    clock_skew_s: float | None
    circuit: str | None
    journal_backlog: int | None
    journal_full: bool
    journal_lost: int
    version: str | None
    uptime_s: float | None
    last_tap: Tap | None


class Kiosk(Struct):
    """A kiosk's state: online while heard from within 90 s and not announced down."""

    device_id: str
    serial: str
    site: str
    gate: str
    location: str
    online: bool
    last_seen: str | None
    health: KioskHealth


class KioskList(Struct):
    """``GET /v1/guard/kiosks``."""

    kiosks: list[Kiosk]


class KioskDetail(Kiosk):
    """``GET /v1/guard/kiosks/{device_id}``: today's decisions per outcome, recent taps."""

    today: dict[str, int] = {}
    recent: list[Tap] = []


def check(value: dict[str, Any], model: type[Struct]) -> None:
    """Raise ``msgspec.ValidationError`` unless ``value`` has ``model``'s shape (tests)."""
    msgspec.convert(value, model, strict=True)
