"""The audit read API's answers (``/v1/audit/*`` for people, issue 12 part 6), typed.

One copy for the server (its OpenAPI document and the tests that hold its answers to it) and
for ``kiosk audit`` (which checks what it receives). Events carry the masked ID number only.
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct


class AuditEventOut(Struct):
    """One stored journal event as a reader sees it. ``site`` and ``gate`` are the kiosk's
    placement now (null for a kiosk no longer registered); ``received_at`` is the server's
    clock when the event arrived, the order of the trail; ``wall_time`` the kiosk's own.
    ``chain_ok``: 1 verified on arrival, 0 a break, null predecessor not received yet.
    ``flagged``: the kiosk's status (revoked, quarantined) when it arrived, else null."""

    received_at: str
    site: str | None
    gate: str | None
    device_id: str
    epoch: str
    seq: int
    wall_time: str
    clock_trusted: bool
    kind: Literal["decision", "fault", "guard", "system"]
    outcome: str | None
    prompt: str | None
    masked_id: str | None
    offline: bool
    cache_age_s: float | None
    latency_ms: float | None
    boot_id: str
    chain_ok: int | None
    flagged: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditEventPage(Struct):
    """``GET /v1/audit/events``: newest first; ``next`` is the cursor of the following page,
    null on the last one."""

    events: list[AuditEventOut]
    next: str | None


class ChainEpoch(Struct):
    """One journal epoch of a kiosk: what is stored and what is wrong with it. ``missing``:
    ``[first, last]`` seq ranges stored once (at or below ``acked_seq``) and gone now."""

    epoch: str
    events: int
    first_seq: int | None
    last_seq: int | None
    acked_seq: int
    breaks: list[int]
    missing: list[list[int]]
    conflicts: int


class ChainReport(Struct):
    """``GET /v1/audit/devices/{device_id}/chain``: the chain recomputed over the stored rows.
    ``ok`` when nothing is broken, conflicting or missing; ``breaks`` are seq numbers, epoch
    by epoch; ``missing`` counts events."""

    device_id: str
    events: int
    ok: bool
    breaks: list[int]
    conflicts: int
    missing: int
    epochs: list[ChainEpoch]
