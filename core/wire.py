"""The bodies kiosk and server exchange (docs/api.md), as typed ``msgspec`` structs.

One copy for both ends: the server decodes requests through these models, the kiosk checks
the server's answers through them, and ``docs/openapi.json`` is generated from them, so the
prose, the spec and the code cannot disagree. msgspec rather than pydantic: it validates while
it parses, several times faster on the verify hot path and on 500-event audit batches
(bench/wire_decode.py, bench/RESULTS.md), is already a light pure dependency of the kiosk
image, and emits JSON Schema.

Conventions. Unknown fields are ignored (msgspec's default), as docs/api.md promises. A field
that may be absent but never ``null`` is typed ``X | UnsetType = UNSET``. Patterns are written
to mean the same under Python's ``re.search`` (msgspec) and ECMA-262 (JSON Schema readers):
``^(?:…)(?![\\s\\S])`` anchors at the very end, where ``$`` would let Python accept a trailing
newline.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec.inspect as mi
from msgspec import UNSET, Meta, Struct, UnsetType, ValidationError, field

from core.idnumbers import is_masked_id
from core.outcomes import DecisionName, OutcomeName

#: The largest integer the audit table stores (SQLite INTEGER).
MAX_INT = 2**63 - 1
#: Largest number of events in one ``POST /v1/audit`` batch.
MAX_EVENTS = 500
#: Longest QR token text (``credential.token``).
MAX_TOKEN_LEN = 1024


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_ECHO = re.compile(r"^Invalid (?:enum )?value .*$", re.DOTALL)
#: A message a model's ``__post_init__`` raises already names its field: ``"name: why"``.
_NAMED = re.compile(r"^(?P<field>[A-Za-z_][A-Za-z0-9_]*): (?P<why>.*)$", re.DOTALL)


def error_text(exc: ValidationError, where: str = "", model: Any = None) -> str:
    """msgspec's message as ``path: why``, the path in this API's ``events[3].seq`` style.

    One style on both ends, the one docs/api.md shows (``body`` for the whole document);
    msgspec's ``$.events[3].seq`` is rewritten into it. A message that would quote the
    refused value is replaced: the value may be personal data. ``where`` prefixes the path.
    With the ``model`` decoded into, a length error states both bounds (``of length
    1..64``): msgspec names only the one broken, and ``<= 64`` reads as if empty were fine.
    """
    parts = _AT.match(str(exc))
    assert parts is not None  # the pattern matches any text
    inner = (parts["path"] or "").lstrip(".")
    message, path = parts["message"], join_path(where, inner)
    if model is not None and _LENGTH.match(message):
        message = _both_bounds(message, model, inner)
    missing = _MISSING.match(message)
    if missing:
        return f"{join_path(path, missing['field'])}: required"
    named = _NAMED.match(message)
    if named:
        return f"{join_path(path, named['field'])}: {named['why']}"
    if _ECHO.match(message):
        message = "not one of the allowed values"
    elif message.startswith("Expected `object`") and not path:
        return "body must be a JSON object"
    return f"{path or 'body'}: {message[:1].lower()}{message[1:]}"


_LENGTH = re.compile(r"^Expected `(?:str|array|object)` of length [<>]= \d+$")
_STEP = re.compile(r"\[\d+\]|[^.\[\]]+")


def _both_bounds(message: str, model: Any, path: str) -> str:
    """``Expected `str` of length <= 64`` → ``… of length 1..64`` when the field at ``path``
    of ``model`` also has a lower bound; the message unchanged when it has none (or the
    path cannot be followed)."""
    info: Any = mi.type_info(model)
    for step in _STEP.findall(path):
        info = _step(info, step)
        if info is None:
            return message
    info = _bare(info)
    low, high = getattr(info, "min_length", None), getattr(info, "max_length", None)
    if not low or high is None:
        return message
    return f"{message.split(' of length ')[0]} of length {low}..{high}"


def _bare(info: Any) -> Any:
    """The type under its metadata; the one non-null member of an optional."""
    while isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.UnionType):
        members = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(members) == 1:
            return _bare(members[0])
    return info


def _step(info: Any, step: str) -> Any:
    """The type one path step (a field name, ``[3]`` or a dict key) below ``info``."""
    info = _bare(info)
    if isinstance(info, mi.UnionType):  # tagged structs: the first member with the field
        found = (_step(member, step) for member in info.types)
        return next((t for t in found if t is not None), None)
    if step.startswith("["):
        return info.item_type if isinstance(info, mi.ListType | mi.VarTupleType) else None
    if isinstance(info, mi.StructType):
        return next((f.type for f in info.fields if f.encode_name == step), None)
    return info.value_type if isinstance(info, mi.DictType) else None


def join_path(parent: str, child: str) -> str:
    """``events[3]`` + ``seq`` → ``events[3].seq``; an index or an empty side joins bare."""
    if not parent or not child:
        return parent or child
    return f"{parent}{child}" if child.startswith("[") else f"{parent}.{child}"


def whole(body: str) -> str:
    """A regex for fields that must match ``body`` entirely, the same in Python and ECMA."""
    return f"^(?:{body})(?![\\s\\S])"


TapId = Annotated[
    str, Meta(pattern=whole("[A-Za-z0-9_.:-]{1,64}"), description="unique per tap, never reused")
]
DeviceId = Annotated[str, Meta(pattern=whole("[A-Za-z0-9_-]{1,64}"))]
Serial = Annotated[str, Meta(pattern=whole("[A-Za-z0-9_.:-]{1,64}"))]
Nonce = Annotated[str, Meta(pattern=whole("[A-Za-z0-9_-]{16,64}"))]
EnrolCode = Annotated[str, Meta(pattern=whole("[A-Za-z0-9 -]{4,32}"))]
PublicKeyHex = Annotated[
    str, Meta(pattern=whole("[0-9a-f]{64}"), description="raw Ed25519 public key, hex")
]
SignatureHex = Annotated[
    str, Meta(pattern=whole("[0-9a-f]{128}"), description="Ed25519 signature, hex")
]
Hash64 = Annotated[str, Meta(pattern=whole("[0-9a-f]{64}"))]
KeyId = Annotated[str, Meta(pattern=whole("[0-9a-f]{16}"))]
MaskedId = Annotated[str, Meta(pattern=whole("[0-9A-Za-z*]{1,32}"))]
Epoch = Annotated[
    str,
    Meta(
        pattern=whole("[A-Za-z0-9_-]{1,64}"),
        description="journal epoch: a random id made with the kiosk's journal; absent for a"
        " journal made before epochs",
    ),
]
Pseudonym = Annotated[str, Meta(pattern=whole("[0-9a-f]{1,128}"))]
IdNumberText = Annotated[str, Meta(max_length=32)]
Token = Annotated[str, Meta(min_length=1, max_length=MAX_TOKEN_LEN)]
BootId = Annotated[str, Meta(min_length=1, max_length=64)]
ShortText = Annotated[str, Meta(max_length=64)]
PromptText = Annotated[str, Meta(max_length=200)]
Timestamp = Annotated[
    str, Meta(description="ISO 8601 with offset", examples=["2026-11-23T08:30:00+00:00"])
]
#: A finite number in [0, 1e15]: ages and latencies (strict JSON has no NaN or Infinity).
Amount = Annotated[float, Meta(ge=0, le=1e15)]
Count = Annotated[int, Meta(ge=0, le=MAX_INT)]
Outcome = DecisionName
JournalOutcome = OutcomeName
CardType = Literal["resident", "J", "I", "Y"]


class ErrorBody(Struct):
    """Every 4xx and 5xx answer: a machine code and a human sentence naming the field."""

    error: str
    detail: str


# -- POST /v1/verify ----------------------------------------------------------------------


class IdCardCredential(Struct, tag_field="kind", tag="id_card", omit_defaults=True):
    """A number read from an identity card or permit; its checksum is the server's call."""

    id_number: IdNumberText
    #: ``null`` or absent means ``resident``.
    card_type: CardType | None = None


class SsCardCredential(IdCardCredential, tag="ss_card"):
    """A social-security card: its number is the holder's ID number."""


class QrCredential(Struct, tag_field="kind", tag="qr"):
    """A decoded health-code QR, opaque to the kiosk; the server resolves it to a person."""

    token: Token


Credential = IdCardCredential | SsCardCredential | QrCredential


class VerifyRequest(Struct):
    """``POST /v1/verify``."""

    tap_id: TapId
    credential: Credential


class ColourRule(Struct):
    """One colour of a site's table: pass or check, and the reason code when it checks."""

    passes: bool
    reason: str


class _Check(Struct):
    """What every check carries: ``stale``/``age_s`` only on a last-known value."""

    status: Literal["ok", "missing", "error"]
    error: str | UnsetType = UNSET
    stale: bool | UnsetType = UNSET
    age_s: Amount | UnsetType = UNSET


class HealthCodeCheck(_Check):
    """The code's colour; ``colours`` is the site's colour table when it is not the default
    one, so that a kiosk deciding later from this answer (offline) judges colours alike."""

    colour: str | UnsetType = UNSET
    reason: str | UnsetType = UNSET
    updated_at: Timestamp | UnsetType = UNSET
    colours: dict[str, ColourRule] | UnsetType = UNSET


class NatCheck(_Check, kw_only=True):
    window_hours: float
    result: str | UnsetType = UNSET
    sampled_at: Timestamp | UnsetType = UNSET
    age_hours: float | UnsetType = UNSET


class VaccinationCheck(_Check, kw_only=True):
    min_doses: Count
    doses: Count | UnsetType = UNSET
    last_dose_at: str | UnsetType | None = UNSET


class TravelCheck(_Check):
    flagged: bool | UnsetType = UNSET
    area: str | UnsetType = UNSET


class Checks(Struct):
    """The four checks; all absent for ``invalid_credential`` and unresolved QR tokens."""

    health_code: HealthCodeCheck | UnsetType = UNSET
    nat: NatCheck | UnsetType = UNSET
    vaccination: VaccinationCheck | UnsetType = UNSET
    travel: TravelCheck | UnsetType = UNSET


class VerifyResponse(Struct):
    """The four-in-one answer."""

    tap_id: str
    outcome: Outcome
    prompt: str
    masked_id: str
    site: str
    reasons: list[str]
    checks: Checks
    server_time: Timestamp


# -- POST /v1/audit -----------------------------------------------------------------------


class AuditEventIn(Struct):
    """One journal event as a kiosk sends it; its hash covers it exactly as sent."""

    seq: Annotated[int, Meta(ge=1, le=MAX_INT)]
    wall_time: Annotated[str, Meta(max_length=64, description="ISO 8601 with a UTC offset")]
    mono_ns: Count
    boot_id: BootId
    clock_trusted: bool
    kind: Literal["decision", "fault", "guard", "system"]
    offline: bool
    prev_hash: Hash64
    hash: Hash64
    outcome: JournalOutcome | None = None
    prompt: PromptText | None = None
    masked_id: MaskedId | None = None
    pseudonym: Pseudonym | None = None
    cache_age_s: Amount | None = None
    latency_ms: Amount | None = None
    detail: dict[str, Any] | None = None
    epoch: Epoch | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.masked_id is not None and not is_masked_id(self.masked_id):
            raise ValueError("masked_id: must have the mask's shape (1101**********4514)")
        if not _aware(self.wall_time):
            raise ValueError("wall_time: must be an ISO 8601 timestamp with a UTC offset")


def _aware(text: str) -> bool:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return False
    return parsed.utcoffset() is not None


class AuditBatch(Struct):
    """``POST /v1/audit``: 1–500 events of one journal epoch in strictly ascending ``seq``."""

    events: Annotated[list[AuditEventIn], Meta(min_length=1, max_length=MAX_EVENTS)]


class AuditAck(Struct):
    """What the server holds of the batch's epoch: every event up to ``acked_seq``, and the
    batch's events in the ``held`` ranges (servers before epochs send no ``held``: the
    kiosk then forgets only up to ``acked_seq``)."""

    acked_seq: Count
    stored: Count
    duplicates: Count
    chain_breaks: list[int]
    conflicts: list[int]
    held: list[tuple[Count, Count]] = field(default_factory=list)
    epoch: str = ""


# -- POST /v1/heartbeat -------------------------------------------------------------------


class JournalState(Struct):
    """The journal's health: ``full`` while it lives on its reserve or holds events in
    memory; ``lost`` counts events lost (or possibly lost) since the journal was opened."""

    full: bool = False
    reserve: Literal["ready", "in_use", "none"] = "ready"
    held: Count = 0
    dead_letters: Count = 0
    lost: Count = 0
    epoch: Annotated[str, Meta(max_length=64)] = ""


#: Upper bounds (seconds) of the prompt-latency buckets a kiosk counts (tap to the prompt
#: starting); one more bucket holds everything slower.
PROMPT_LATENCY_BOUNDS_S: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0)


class LatencyCounts(Struct):
    """A histogram as plain counts: ``buckets[i]`` counts samples at most
    ``PROMPT_LATENCY_BOUNDS_S[i]`` and above the bound before it (not cumulative); the last
    bucket counts the rest."""

    buckets: list[Count] = field(default_factory=list)
    sum_s: Amount = 0.0


class KioskCounters(Struct):
    """Counters since the agent started (``boot_id`` tells a restart, which resets them).

    The server turns each kiosk's counters into per-site totals that only grow
    (docs/metrics.md). ``journal_backlog`` is a level, not a counter.
    """

    taps: dict[OutcomeName, Count] = field(default_factory=dict)
    offline_decisions: Count = 0
    reader_errors: Count = 0
    prompt_latency: LatencyCounts = field(default_factory=LatencyCounts)
    journal_backlog: Count = 0


UpdateState = Literal["downloading", "installing", "trial", "committed", "failed", "rolled_back"]


class UpdateReport(Struct):
    """Where a kiosk stands with the release it was offered (docs/updates.md)."""

    version: ShortText
    state: UpdateState
    detail: Annotated[str, Meta(max_length=500)] | None = None
    #: Kiosk wall clock, unix seconds, when ``state`` was reached.
    at: Amount | None = None
    #: A ``failed`` the kiosk will try again (interrupted, out of space): no verdict on the
    #: release, so it does not count toward halting a rollout.
    retry: bool = False


#: Latest ``sent_at`` taken for a unix time: 2100-01-01. A larger number is a unit mistake
#: (milliseconds: ~1.7e12), refused with a 400 naming the field rather than recorded as a
#: skew of decades. No lower bound above 0: a Pi without a real-time clock boots in 1970,
#: and that skew is exactly what the server must hear.
MAX_SENT_AT = 4_102_444_800
SentAt = Annotated[
    float,
    Meta(
        ge=0,
        le=MAX_SENT_AT,
        description="kiosk wall clock, unix seconds (sub-second precision allowed), at most"
        f" {MAX_SENT_AT} (2100-01-01): not milliseconds",
    ),
]


class Heartbeat(Struct):
    """A kiosk's status; stored whole (unknown fields too), so free of clear ID numbers."""

    boot_id: BootId
    uptime_s: Amount | None = None
    version: ShortText | None = None
    clock_trusted: bool | UnsetType = UNSET
    journal_pending: Count | None = None
    journal: JournalState | None = None
    reader: dict[str, Any] | None = None
    #: The kiosk's wall clock, unix seconds: the answer then carries ``clock_skew_s``.
    sent_at: SentAt | None = None
    counters: KioskCounters | None = None
    update: UpdateReport | None = None


class AuditHistory(Struct):
    """What the server holds of this kiosk's audit: journal epochs and events acknowledged."""

    epochs: Count
    events: Count


class UpdateOffer(Struct):
    """The release this kiosk should run, when it is not the one it runs: the wheel at
    ``url`` (on this server, with the kiosk's session) whose SHA-256 is ``sha256``, signed
    with the release key the kiosk pins (``core.releases.release_message``)."""

    version: ShortText
    filename: Annotated[str, Meta(max_length=200)]
    sha256: Hash64
    signature: SignatureHex
    size: Count
    url: Annotated[str, Meta(max_length=300)]


class HeartbeatAnswer(Struct):
    """The server's time, the fleet configuration version and the kiosk's merged settings."""

    server_time: Timestamp
    commands: list[Any]
    config_version: int
    config: dict[str, Any]
    clock_skew_s: float | UnsetType = UNSET
    audit: AuditHistory | UnsetType = UNSET
    update: UpdateOffer | UnsetType = UNSET


# -- GET /v1/snapshot ---------------------------------------------------------------------


class SnapshotPolicy(Struct):
    """The numbers and colour table a kiosk decides with offline."""

    nat_window_hours: Annotated[float, Meta(gt=0)]
    min_doses: Count
    colours: dict[str, ColourRule] | UnsetType = UNSET


class SnapshotPerson(Struct):
    """Facts of one expected person; ``null`` where the server has no record."""

    colour: str | None = None
    nat_result: str | None = None
    nat_sampled_at: Timestamp | None = None
    doses: Count | None = None
    last_dose_at: str | None = None
    travel_flagged: bool | None = None
    area: str | None = None


class Snapshot(Struct):
    """The signed part: people keyed by pseudonym under the site's key."""

    site: str
    generated_at: Timestamp
    policy: SnapshotPolicy
    count: Count
    truncated: bool
    people: dict[str, SnapshotPerson]


class SnapshotDocument(Struct):
    """``GET /v1/snapshot``: the signature is over the canonical JSON of ``snapshot``."""

    snapshot: Snapshot
    signature: SignatureHex
    key_id: KeyId


# -- device identity ----------------------------------------------------------------------


class EnrolRequest(Struct):
    """``POST /v1/enrol``: the kiosk's new key, proven by its signature over the code."""

    serial: Serial
    code: EnrolCode
    public_key: PublicKeyHex
    signature: SignatureHex


class EnrolAnswer(Struct):
    """Everything for the kiosk's bundle except its private key."""

    device_id: str
    serial: str
    site: str
    gate: str
    server_key: str
    server_url: str
    tls_ca: str
    site_key: str | UnsetType = UNSET
    #: The same key as ``site_key``, under the name kiosks of older releases read.
    fleet_key: str | UnsetType = UNSET


class ChallengeRequest(Struct):
    device_id: DeviceId


#: Seconds a challenge or token lasts. Servers send a whole number (``60``, ``900``); the type
#: stays ``number`` so that kiosks also accept the ``60.0`` older servers sent.
ExpiresIn = Annotated[float, Meta(ge=0, description="seconds, a whole number (e.g. 60, 900)")]


class ChallengeAnswer(Struct):
    nonce: str
    expires_in: ExpiresIn
    server_time: Timestamp


class SessionRequest(Struct, omit_defaults=True):
    """A signed challenge; with ``new_public_key`` it also rotates the kiosk's key."""

    device_id: DeviceId
    nonce: Nonce
    time: Annotated[
        int,
        Meta(
            ge=0,
            le=2**40,
            description="kiosk unix seconds, an integer (a fraction is refused: the signed"
            " text holds the same digits)",
        ),
    ]
    signature: SignatureHex
    new_public_key: PublicKeyHex | None = None
    new_signature: SignatureHex | None = None


class SessionAnswer(Struct):
    token: str
    expires_in: ExpiresIn
    server_time: Timestamp
    clock_skew_s: float
    rotated: bool


class StatusRefusal(Struct):
    """``403 revoked`` / ``403 quarantined`` of ``POST /v1/session`` (after a valid
    signature): an error body that also carries ``audit_token``, a session token that only
    ``POST /v1/audit`` accepts, so a kiosk cut off still hands in what it saw (its events are
    stored flagged). Everything else stays refused to it; the kiosk decides ``check``."""

    error: Literal["revoked", "quarantined"]
    detail: str
    audit_token: str
    expires_in: ExpiresIn
    server_time: Timestamp


class Health(Struct):
    status: Literal["ok"]


PassNonce = Annotated[str, Meta(pattern=whole("[0-9a-f]{16}"))]


class PassClaim(Struct):
    """``POST /v1/passes/claim``: a kiosk accepted a signed pass and claims its nonce, so
    that no other kiosk accepts it again before it expires (docs/passes.md)."""

    nonce: Annotated[PassNonce, Meta(description="the pass's `n`: 16 lower-case hex")]
    expires_at: Annotated[int, Meta(ge=0, le=2**40, description="the pass's `exp`, unix seconds")]


class PassClaimAnswer(Struct):
    """The claim is this kiosk's (a second claim anywhere gets ``409 replay``)."""

    nonce: PassNonce
    claimed_at: Annotated[int, Meta(description="unix seconds, server clock")]
