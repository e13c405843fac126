"""Bodies of the release and rollout admin API (``/v1/admin/releases``, ``/v1/admin/rollouts``).

Shared by the server's handlers and ``kiosk release`` (provisioning/release_cli.py), so the
two cannot drift; the OpenAPI document is generated from them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct, field

from core.releases import VERSION, WHEEL_NAME
from core.wire import Count, Hash64, SignatureHex, whole

Scope = Literal["fleet", "site", "device"]
RolloutState = Literal["running", "halted", "done", "cancelled"]
#: A wheel is a few MB; the upload carries it base64 in JSON (4/3 larger).
MAX_WHEEL_BYTES = 64 * 1024 * 1024

Version = Annotated[str, Meta(pattern=whole(VERSION.pattern), description="release version")]
WheelName = Annotated[str, Meta(pattern=whole(WHEEL_NAME.pattern), description="wheel file name")]
Percent = Annotated[float, Meta(gt=0, le=100)]
Fraction = Annotated[float, Meta(ge=0, lt=1)]


class ReleaseUpload(Struct):
    """``POST /v1/admin/releases``: a signed wheel. ``wheel`` is its bytes, base64 (standard
    alphabet, padded) in JSON; the server checks ``size`` and ``sha256`` against them and,
    with ``[releases] release_key`` set, the signature."""

    version: Version
    filename: WheelName
    sha256: Hash64
    signature: SignatureHex
    size: Count
    wheel: bytes


class ReleaseInfo(Struct):
    """A stored release (without its bytes)."""

    version: str
    filename: str
    sha256: str
    signature: str
    size: int
    published_at: str
    published_by: str


class ReleaseList(Struct):
    """``GET /v1/admin/releases``: newest first."""

    releases: list[ReleaseInfo]


class ReleasePublished(Struct):
    """The release as stored; ``created`` is false when the very same wheel was there."""

    release: ReleaseInfo
    created: bool


class RolloutRequest(Struct):
    """``POST /v1/admin/rollouts``: offer ``version`` to a scope in waves (percent of its
    kiosks, increasing, the last 100). A device rollout has one wave of 100.
    ``soak_s``: a wave stays open at least this long before the next opens."""

    version: Version
    scope: Scope = "fleet"
    target: Annotated[str, Meta(max_length=100)] = ""
    waves: Annotated[list[Percent], Meta(min_length=1, max_length=20)] = field(
        default_factory=lambda: [1.0, 10.0, 100.0]
    )
    failure_threshold: Fraction = 0.05
    soak_s: Annotated[float, Meta(ge=0, le=30 * 86400)] = 0.0


class WaveStatus(Struct):
    """One wave: its band of kiosks (percent ``from_pct`` up to ``to_pct``) and where they
    stand with the rollout's version. ``offered``: in an open wave, neither at the version nor
    reporting; ``committed`` counts kiosks running the version."""

    index: int
    from_pct: float
    to_pct: float
    open: bool
    kiosks: int
    offered: int = 0
    downloading: int = 0
    installing: int = 0
    trial: int = 0
    committed: int = 0
    failed: int = 0
    rolled_back: int = 0


class RolloutInfo(Struct):
    """A rollout and (for ``GET /v1/admin/rollouts/{id}``) its waves and the versions its
    kiosks run per site."""

    id: int
    version: str
    scope: Scope
    target: str
    waves: list[float]
    wave: int
    failure_threshold: float
    soak_s: float
    state: RolloutState
    started_at: str
    started_by: str
    wave_started_at: str
    ended_at: str | None = None
    halted_reason: str | None = None
    wave_status: list[WaveStatus] = field(default_factory=list)
    #: site → version → kiosks running it (kiosks this rollout covers).
    versions: dict[str, dict[str, int]] = field(default_factory=dict)


class RolloutList(Struct):
    """``GET /v1/admin/rollouts``: newest first."""

    rollouts: list[RolloutInfo]
