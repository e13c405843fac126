"""The admin API's bodies (``/v1/admin/*``, docs/api.md), as typed ``msgspec`` structs.

One copy for three users: the server decodes admin requests through these models, the
provisioning tool's remote mode checks the server's answers through them, and the local
mode hands the very same types back, so ``kiosk provision …`` prints one format whichever way
it reached the fleet. The OpenAPI document is generated from them.

Device rows of a bulk upsert stay loosely typed (``list[Any]``): a row that is not an object,
or that carries a private key, is refused *for that row* in the report, never for the whole
request, and extra string columns are kept per device.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from core.wire import JournalState

#: Largest number of devices in one bulk upsert (and at most 16 MiB of JSON).
MAX_BULK_DEVICES = 100_000
#: Largest number of sites registered by one request.
MAX_SITES = 10_000

Scope = Literal["fleet", "site", "device"]
DeviceAction = Literal["revoke", "quarantine", "release", "rotate"]
RowAction = Literal["created", "updated", "unchanged"]
PublicKey = Annotated[
    str, Meta(pattern="^[0-9a-f]{64}$", description="raw Ed25519 public key, 64 lower-case hex")
]


#: A time-based one-time code (RFC 6238, 6 digits), for accounts with a second factor.
TotpCode = Annotated[str, Meta(pattern="^[0-9]{6}$", description="6-digit TOTP code")]


class LoginRequest(Struct):
    """``POST /v1/admin/login``; ``totp`` is required once the account enrolled a second
    factor (``POST /v1/admin/totp``), ignored otherwise."""

    username: Annotated[str, Meta(max_length=64)]
    password: Annotated[str, Meta(max_length=1024)]
    totp: TotpCode | None = None


class LoginAnswer(Struct):
    """A bearer token for the other admin calls, valid until ``expires_at``."""

    token: str
    expires_at: str


class UserLoginAnswer(Struct):
    """``POST /v1/login``: a bearer token, the account's role and (for a guard) its sites."""

    token: str
    role: str
    sites: list[str]
    expires_at: str


class UserRequest(Struct):
    """``POST /v1/admin/users``: create an account or replace its role, sites and password
    (a guard needs at least one site; admins and auditors see every site)."""

    username: Annotated[str, Meta(min_length=1, max_length=64)]
    role: Literal["admin", "guard", "auditor"]
    password: Annotated[str, Meta(min_length=10, max_length=1024)]
    sites: list[Annotated[str, Meta(min_length=1, max_length=64)]] = []


class UserInfo(Struct):
    """One account, without its password."""

    username: str
    role: str
    sites: list[str]
    created_at: str


class UserList(Struct):
    """``GET /v1/admin/users``."""

    users: list[UserInfo]


class TotpSecret(Struct):
    """A second factor being enrolled: put ``uri`` (or ``secret``, base32) into an
    authenticator app, then confirm with one of its codes."""

    secret: str
    uri: str


class TotpConfirm(Struct):
    """``POST /v1/admin/totp/confirm``: a code from the authenticator."""

    code: TotpCode


class TotpState(Struct):
    """Whether the account's logins now need a one-time code."""

    enabled: bool


# -- devices ------------------------------------------------------------------------------


class BulkRequest(Struct, kw_only=True):
    """``POST /v1/admin/devices``: upsert devices keyed by serial, in one transaction."""

    devices: Annotated[
        list[Any],
        Meta(
            min_length=1,
            max_length=MAX_BULK_DEVICES,
            description="objects {serial, site, gate?, location?, public_key?, …extra strings}",
        ),
    ]
    dry_run: bool = False
    create_sites: bool = False
    #: The caller's own row numbers (e.g. CSV line numbers), one per device: the report and
    #: its messages (``row N: …``) use them instead of ``devices[i]``.
    rows: list[Annotated[int, Meta(ge=1)]] | None = None
    #: Also answer what bundles of the new devices need (``bundle``).
    bundle: bool = False


class RowFailure(Struct, kw_only=True, omit_defaults=True):
    """A refused row of a bulk upsert (the rest of the request is still applied)."""

    row: int
    serial: str = ""
    action: Literal["error"]
    device_id: str | None = None
    error: str


class RowDone(Struct):
    """A row of a bulk upsert that was (or, in a dry run, would be) applied."""

    row: int
    serial: str
    device_id: str | None
    action: RowAction


class BundleFacts(Struct):
    """What a bundle holds besides the kiosk's own key pair: written by the caller.

    ``site_keys`` are the pseudonym keys of the sites of the new devices; ``server_url`` is
    the fleet's configured URL, ``""`` when none was set.
    """

    server_url: str
    server_key: str
    tls_ca: str
    site_keys: dict[str, str]


class BulkAnswer(Struct, kw_only=True, omit_defaults=True):
    """The per-row report of a bulk upsert."""

    dry_run: bool
    created: int
    updated: int
    unchanged: int
    errors: list[RowFailure]
    devices: list[RowDone]
    bundle: BundleFacts | None = None


class RegisterRequest(Struct, kw_only=True):
    """``POST /v1/admin/devices/{serial}``: one kiosk with its new public key.

    A known serial is refused (``409 serial_exists``) unless ``rekey``: then the device keeps
    its id and placement changes, takes the new key, and its old key stops working.
    """

    site: Annotated[str, Meta(max_length=100)]
    gate: Annotated[str, Meta(max_length=100)] = ""
    location: Annotated[str, Meta(max_length=200)] = ""
    public_key: PublicKey
    rekey: bool = False


class Registered(Struct, kw_only=True):
    """A registered kiosk and what its bundle needs besides its own key pair."""

    device_id: str
    serial: str
    site: str
    gate: str
    server_url: str
    server_key: str
    tls_ca: str
    site_key: str


class DeviceInfo(Struct):
    """A device as admins see it: never a key, only whether there is one."""

    device_id: str
    serial: str
    site: str
    gate: str
    location: str
    status: Literal["active", "quarantined", "revoked"]
    created_at: str
    last_seen_at: str | None
    enrolled: bool
    rotate_pending: bool
    #: The software version of the last heartbeat.
    version: str | None
    clock_skew_s: float | None
    #: The last heartbeat's health as the board shows it (server.board.kiosks.health_of):
    #: reader, camera, audio ("ok", "fault" or "absent"), clock_trusted, clock_skew_s, circuit,
    #: journal_backlog, journal_full, journal_lost, version, uptime_s; null before the first.
    health: dict[str, Any] | None = None


class DeviceList(Struct):
    """``GET /v1/admin/devices``."""

    devices: list[DeviceInfo]


class EnrolCodeRequest(Struct):
    """``POST /v1/admin/devices/{serial}/enrol-code``; the body is optional."""

    ttl_s: Annotated[float, Meta(ge=60, le=7 * 86400)] | None = None


class EnrolCode(Struct):
    """A single-use enrolment code for one serial."""

    serial: str
    code: str
    expires_at: str


# -- sites and layered configuration -----------------------------------------------------


class SitesRequest(Struct):
    """``POST /v1/admin/sites``: register sites (idempotent)."""

    sites: Annotated[
        list[Annotated[str, Meta(max_length=100)]], Meta(min_length=1, max_length=MAX_SITES)
    ]


class SitesAdded(Struct):
    """The sites that were new."""

    added: list[str]


class SiteList(Struct):
    """``GET /v1/admin/sites``: every registered site, sorted."""

    sites: list[str]


class ConfigSetRequest(Struct, kw_only=True):
    """``POST /v1/admin/config``: one key at one layer; ``value: null`` removes it."""

    scope: Scope
    target: Annotated[str, Meta(max_length=100)] = ""
    key: Annotated[str, Meta(max_length=140)]
    value: Any


class ConfigVersion(Struct):
    """The fleet's configuration version after a change."""

    config_version: int


class ConfigLayer(Struct):
    """One configured key of one layer."""

    scope: Scope
    target: str
    key: str
    value: Any
    version: int
    updated_at: str


class ConfigLayers(Struct):
    """``GET /v1/admin/config``: every layer's keys, fleet first, then sites, then devices."""

    layers: list[ConfigLayer]


class AuditAlert(Struct, kw_only=True):
    """One kiosk whose audit needs a person (``server.audit.state.alerts``): its journal is
    full, or the server counted conflicts, chain breaks, lost events or events flagged
    (received while the kiosk was revoked or quarantined). Counts are totals since the first
    problem; ``journal`` is the kiosk's last heartbeat report of it (``null``: none yet)."""

    device_id: str
    serial: str | None
    site: str | None
    gate: str | None
    status: Literal["active", "quarantined", "revoked"] | None
    journal_full: bool
    journal: JournalState | None
    journal_seen_at: str | None
    conflicts: int
    chain_breaks: int
    lost: int
    flagged: int
    last_problem_at: str | None


class AuditAlerts(Struct):
    """``GET /v1/admin/audit/alerts``: the kiosks with audit trouble, latest problem first."""

    devices: list[AuditAlert]
