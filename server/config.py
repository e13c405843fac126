"""Server configuration: the TOML file's schema, and the frozen :class:`ServerConfig` built from it.

Every error names the file and the key (``siheyi.toml: [policy] min_doses: must be …``);
unknown keys are rejected so a typo never silently falls back to a default.

The ``*Table`` Structs below mirror the file and hold every type, default, bound and
description once; :mod:`core.configschema` checks a file against :class:`ServerFile` and
:mod:`core.configdoc` writes the table in docs/server.md from it. What a per-key schema cannot
say (a site inheriting the fleet policy, an upstream's URL rules, ``${ENV}`` expansion, a
relative database path) is the short functions after them. :class:`ServerConfig` stays a
dataclass: the command line and the tests derive variants with ``dataclasses.replace``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct

from core import configschema
from core.checks import MAPPED_FIELDS, SOURCE_NAMES
from core.configschema import NOT_BLANK, KeyPath
from core.outcomes import DECISIONS, DEFAULT_PROMPTS, DecisionName
from core.policy import DEFAULT_MAX_STALE_S, DEFAULT_NAT_WINDOW_HOURS, ColourRule, SitePolicy
from server.alerts.settings import AlertSettings
from server.errors import ConfigError
from server.lookup.settings import LookupSettings, LookupTable, lookup_settings
from server.metrics.settings import MetricsSettings
from server.releases.settings import ReleaseSettings
from server.storage.connection import is_postgres

#: The outcomes a site may give prompts for (core.outcomes.DecisionName as values).
OUTCOMES = tuple(sorted(o.value for o in DECISIONS))

SOURCE_TYPES = ("local", "http")
HTTP_METHODS = ("GET", "POST")
ID_PLACEHOLDER = "{id_number}"
TOKEN_PLACEHOLDER = "{token}"
#: The mapping field that tells where a token-resolve answer holds the ID number.
RESOLVED_ID_FIELD = "id_number"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_Text = Annotated[str, Meta(pattern=NOT_BLANK)]
_HeaderName = Annotated[str, Meta(pattern=r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")]
_Reason = Annotated[str, Meta(pattern=r"\A[a-z0-9_:]{0,64}\Z")]
_SourceTimeout = Annotated[float, Meta(gt=0, le=60)]


class ServerTable(Struct, frozen=True, forbid_unknown_fields=True):
    """``[server]``: where to listen and which database to open."""

    host: Annotated[_Text, Meta(description="listen address")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535, description="listen port")] = 8080
    database: Annotated[
        _Text,
        Meta(
            description="SQLite file (a relative path is relative to the config file) or a "
            "postgresql:// URL"
        ),
    ] = "siheyi.db"
    workers: Annotated[
        int, Meta(ge=1, le=64, description="server processes sharing the port (SO_REUSEPORT)")
    ] = 1
    pool_size: Annotated[
        int,
        Meta(
            ge=1, le=200, description="PostgreSQL connections per process, in each of its two pools"
        ),
    ] = 10
    access_log: Annotated[
        bool, Meta(description="log one line per request (logger siheyi.access), off the loop")
    ] = True
    trusted_proxies: Annotated[
        list[_Text],
        Meta(
            description="addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For "
            "and X-Forwarded-Proto are believed; from anyone else they are ignored"
        ),
    ] = []


class AuditTable(Struct, frozen=True, forbid_unknown_fields=True):
    """``[audit]``: how long audit events are kept."""

    retention_days: Annotated[
        int,
        Meta(
            ge=0,
            le=36500,
            description="events received longer ago are removed by `kiosk server prune` "
            "(0: keep for ever)",
        ),
    ] = 0


class ColourTable(Struct, frozen=True, forbid_unknown_fields=True):
    """One health-code colour of a site's colour table."""

    passes: Annotated[bool, Meta(description="the colour passes (else it checks)")]
    reason: Annotated[
        _Reason | None,
        Meta(
            description='reason code when it checks (unset: "code_not_green"); '
            "a colour that checks needs one"
        ),
    ] = None
    prompt: Annotated[
        _Text | None, Meta(description="words spoken for this colour instead of the outcome's")
    ] = None


class PolicyTable(Struct, frozen=True, forbid_unknown_fields=True):
    """``[policy]`` (the fleet default) and ``[sites."<site>"]`` (a site's overrides)."""

    nat_window_hours: Annotated[
        float,
        Meta(
            gt=0,
            le=8760,
            description="a negative NAT older than this → nat_expired (exactly this old passes)",
        ),
    ] = DEFAULT_NAT_WINDOW_HOURS
    min_doses: Annotated[
        int, Meta(ge=0, le=10, description="vaccine doses needed to pass (0: only reported)")
    ] = 0
    prompts: Annotated[dict[DecisionName, _Text], Meta(description="text spoken per outcome")] = (
        msgspec.field(
            default_factory=lambda: {o: DEFAULT_PROMPTS[o] for o in get_args(DecisionName)}
        )
    )
    colours: Annotated[
        dict[str, ColourTable],
        Meta(
            description="colour table; the default: green passes, yellow and red check "
            "(code_not_green); a colour not in the table checks (code_colour_unknown); "
            "a site's colours add to or override the fleet's",
            extra={"key": "colour"},
        ),
    ] = {}


class SourceTable(Struct, frozen=True, forbid_unknown_fields=True):
    """``[sources.<name>]``: one check kind's source, the local tables or an HTTP upstream."""

    type: Annotated[
        Literal["local", "http"], Meta(description="local: the SQLite tables; http: an upstream")
    ] = "local"
    timeout_s: Annotated[
        _SourceTimeout | None, Meta(description="this source's own timeout (else [sources])")
    ] = None
    url: Annotated[
        _Text | None,
        Meta(
            description="http: required; an http(s) URL, {id_number} the only placeholder "
            "(in the url or the body); ${ENV} expanded"
        ),
    ] = None
    method: Annotated[_Text, Meta(description="GET or POST (any case)")] = "GET"
    body: Annotated[
        Any, Meta(description="POST only: a JSON template, {id_number} replaced in every string")
    ] = None
    headers: Annotated[
        dict[_HeaderName, str],
        Meta(description="sent as given; no line breaks; ${ENV} expanded", extra={"key": "header"}),
    ] = {}
    mapping: Annotated[
        dict[str, _Text],
        Meta(
            description="http: required; our field → dotted path into the upstream's JSON",
            extra={"key": "field"},
        ),
    ] = {}
    values: Annotated[
        dict[str, dict[str, str | int | float | bool]],
        Meta(description="per mapped field: upstream value → our value", extra={"key": "field"}),
    ] = {}
    resolve_url: Annotated[
        _Text | None,
        Meta(
            description="health_code, http only: GET URL template resolving a QR {token} "
            "(required, the only placeholder) to a person; needs mapping.id_number; "
            "${ENV} expanded"
        ),
    ] = None


class SourcesTable(Struct, frozen=True, forbid_unknown_fields=True):
    """``[sources]``: lookup timeouts, last-known values and the four check kinds' sources."""

    timeout_s: Annotated[
        _SourceTimeout, Meta(description="lookup timeout of every source without its own")
    ] = 0.3
    max_stale_s: Annotated[
        float,
        Meta(gt=0, le=7 * 86400, description="a last-known value older than this is not used"),
    ] = DEFAULT_MAX_STALE_S
    cache_size: Annotated[
        int,
        Meta(ge=0, le=10_000_000, description="people whose last value each source remembers"),
    ] = 100_000
    health_code: SourceTable | None = None
    nat: SourceTable | None = None
    vaccination: SourceTable | None = None
    travel: SourceTable | None = None


class SnapshotTable(Struct, frozen=True, forbid_unknown_fields=True):
    """``[snapshot]``: the signed site snapshots kiosks pre-load."""

    max_people: Annotated[
        int, Meta(ge=1, le=1_000_000, description="people in one site's snapshot at most")
    ] = 50_000
    cache_s: Annotated[
        float,
        Meta(ge=0, le=3600, description="a snapshot is rebuilt at most this often (0: always)"),
    ] = 60.0


class IdentitySettings(Struct, frozen=True, forbid_unknown_fields=True):
    """Kiosk identity and sessions (``[identity]``, docs/identity.md)."""

    session_ttl_s: Annotated[float, Meta(ge=60, le=86400, description="session token lifetime")] = (
        900.0
    )
    challenge_ttl_s: Annotated[
        float, Meta(ge=5, le=600, description="a session challenge must be signed within this")
    ] = 60.0
    enrol_code_ttl_s: Annotated[
        float, Meta(ge=60, le=7 * 86400, description="default lifetime of an enrolment code")
    ] = 900.0
    clock_skew_s: Annotated[
        float,
        Meta(
            ge=1,
            le=86400,
            description="kiosk clock error tolerated at session start "
            "(beyond: 401 clock_skew with the server time)",
        ),
    ] = 300.0
    status_sync_s: Annotated[
        float,
        Meta(ge=0, le=60, description="cached device status is at most this old (0: per request)"),
    ] = 1.0
    admin_token_ttl_s: Annotated[
        float, Meta(ge=60, le=86400, description="admin bearer token lifetime")
    ] = 3600.0
    replay_window: Annotated[
        int,
        Meta(
            ge=16,
            le=1_000_000,
            description="decided tap ids each process keeps in memory in front of the "
            "database's replay memory (a replay found there is refused before any work)",
        ),
    ] = 4096
    replay_ttl_s: Annotated[
        float,
        Meta(ge=60, le=30 * 86400, description="a tap id is remembered (refused again) this long"),
    ] = 86400.0


class LimitSettings(Struct, frozen=True, forbid_unknown_fields=True):
    """Overload protection (``[limits]``): beyond these a request gets ``429`` + Retry-After."""

    session_per_s: Annotated[
        float, Meta(ge=1, le=100_000, description="challenges + sessions per second (bucket)")
    ] = 500.0
    session_burst: Annotated[int, Meta(ge=1, le=1_000_000, description="session bucket size")] = (
        1000
    )
    enrol_per_s: Annotated[
        float, Meta(ge=0.1, le=10_000, description="enrolment attempts per second")
    ] = 20.0
    login_per_s: Annotated[
        float, Meta(ge=0.1, le=1000, description="admin logins per second (argon2 is slow)")
    ] = 2.0
    device_inflight: Annotated[
        int, Meta(ge=1, le=1_000_000, description="device requests handled at once")
    ] = 4096
    admin_inflight: Annotated[
        int, Meta(ge=1, le=1000, description="admin requests handled at once")
    ] = 4
    people_inflight: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000,
            description="guard, auditor and board requests handled at once (not the live streams)",
        ),
    ] = 64
    device_inflight_each: Annotated[
        int,
        Meta(ge=1, le=10_000, description="requests of one kiosk handled at once (its share)"),
    ] = 16
    body_timeout_s: Annotated[
        float,
        Meta(ge=0.5, le=600, description="a request body must arrive within this (else 408)"),
    ] = 10.0
    bulk_body_timeout_s: Annotated[
        float,
        Meta(ge=1, le=3600, description="the same for bulk admin bodies (up to 16 MiB)"),
    ] = 120.0
    header_timeout_s: Annotated[
        float,
        Meta(ge=0.5, le=600, description="a new connection must send its headers within this"),
    ] = 5.0
    keepalive_s: Annotated[
        float, Meta(ge=1, le=3600, description="an idle kept-alive connection is closed after this")
    ] = 30.0
    fd_reserve: Annotated[
        int,
        Meta(
            ge=16,
            le=100_000,
            description="file descriptors never used by client connections (database, "
            "upstreams, logs); beyond the rest the oldest idle connection is dropped",
        ),
    ] = 640
    login_free_failures: Annotated[
        int,
        Meta(
            ge=1,
            le=100,
            description="failed admin logins per account and source before backoff "
            "(60 s, doubling, at most 1 h)",
        ),
    ] = 3
    login_wide_free_failures: Annotated[
        int,
        Meta(
            ge=1,
            le=1000,
            description="failed logins per account (all sources) and per source (all "
            "accounts) before backoff; a source that logged in to an account before is "
            "exempt from that account's",
        ),
    ] = 10


class ServerFile(Struct, frozen=True, forbid_unknown_fields=True):
    """The whole server configuration file; every table is optional."""

    server: ServerTable = ServerTable()
    audit: AuditTable = AuditTable()
    lookup: LookupTable = LookupTable()
    alerts: AlertSettings = AlertSettings()
    releases: ReleaseSettings = ReleaseSettings()
    metrics: MetricsSettings = MetricsSettings()
    policy: PolicyTable = msgspec.field(default_factory=PolicyTable)
    sites: Annotated[
        dict[Annotated[str, Meta(pattern=NOT_BLANK)], PolicyTable],
        Meta(
            description='per-site overrides (`[sites."east-gate"]`): the keys of [policy]; '
            "a key not set is inherited from [policy], prompts and colours add to its own",
            extra={"key": "site", "collapse": True},
        ),
    ] = {}
    sources: SourcesTable = SourcesTable()
    snapshot: SnapshotTable = SnapshotTable()
    identity: IdentitySettings = IdentitySettings()
    limits: LimitSettings = LimitSettings()


def _bounds(table: type[Struct]) -> Mapping[str, tuple[str, float, float]]:
    """A table of bounded numbers as key → (kind, low, high); kind "n" number, "i" integer."""
    info = msgspec.inspect.type_info(table)
    assert isinstance(info, msgspec.inspect.StructType)
    out: dict[str, tuple[str, float, float]] = {}
    for f in info.fields:
        number = f.type.type if isinstance(f.type, msgspec.inspect.Metadata) else f.type
        assert isinstance(number, msgspec.inspect.IntType | msgspec.inspect.FloatType)
        assert number.ge is not None and number.le is not None
        out[f.name] = (
            "i" if isinstance(number, msgspec.inspect.IntType) else "n",
            number.ge,
            number.le,
        )
    return MappingProxyType(out)


#: ``[identity]`` / ``[limits]`` keys: (kind, low, high); kind "n" number, "i" integer.
IDENTITY_BOUNDS = _bounds(IdentitySettings)
LIMIT_BOUNDS = _bounds(LimitSettings)
_DEFAULTS = ServerFile()


@dataclass(frozen=True)
class HttpUpstream:
    """Where and how a source asks a remote service, and how its JSON maps onto our fields.

    ``headers`` are already ``${ENV}``-expanded and hold secrets: they are left out of the
    ``repr`` so a logged configuration never shows them.
    """

    url: str
    method: str = "GET"
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    mapping: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    values: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    #: health_code only: GET URL template with ``{token}`` resolving a QR token to a person;
    #: ``mapping["id_number"]`` is then the path of the ID number in its answer.
    resolve_url: str | None = None


@dataclass(frozen=True)
class SourceSettings:
    """One check kind's source: the local tables or an HTTP upstream, and its timeout."""

    type: str = "local"
    timeout_s: float | None = None  # None: [sources] timeout_s
    http: HttpUpstream | None = None


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server process needs; build with :func:`load_config` or :meth:`default`."""

    host: str = _DEFAULTS.server.host
    port: int = _DEFAULTS.server.port
    database: str = _DEFAULTS.server.database
    workers: int = _DEFAULTS.server.workers
    pool_size: int = _DEFAULTS.server.pool_size
    access_log: bool = _DEFAULTS.server.access_log
    trusted_proxies: tuple[str, ...] = ()
    audit_retention_days: int = _DEFAULTS.audit.retention_days
    policy: SitePolicy = field(default_factory=SitePolicy)
    sites: Mapping[str, SitePolicy] = field(default_factory=lambda: MappingProxyType({}))
    source_timeout_s: float = _DEFAULTS.sources.timeout_s
    source_max_stale_s: float = _DEFAULTS.sources.max_stale_s
    source_cache_size: int = _DEFAULTS.sources.cache_size
    sources: Mapping[str, SourceSettings] = field(default_factory=lambda: MappingProxyType({}))
    snapshot_max_people: int = _DEFAULTS.snapshot.max_people
    snapshot_cache_s: float = _DEFAULTS.snapshot.cache_s
    identity: IdentitySettings = _DEFAULTS.identity
    limits: LimitSettings = _DEFAULTS.limits
    lookup: LookupSettings = field(default_factory=LookupSettings)
    alerts: AlertSettings = _DEFAULTS.alerts
    releases: ReleaseSettings = _DEFAULTS.releases
    metrics: MetricsSettings = _DEFAULTS.metrics

    @classmethod
    def default(cls, database: str | Path = "siheyi.db", **overrides: Any) -> ServerConfig:
        """Return the built-in defaults with ``database`` (and any other field) replaced."""
        return replace(cls(database=str(database)), **overrides)

    def policy_for(self, site: str) -> SitePolicy:
        """Return the policy of ``site``: its override if any, else the fleet default."""
        return self.sites.get(site, self.policy)

    def source(self, name: str) -> SourceSettings:
        """Return the settings of source ``name`` (the local tables when not configured)."""
        return self.sources.get(name) or SourceSettings()

    def timeout_for(self, name: str) -> float:
        """The lookup timeout of source ``name``: its own, else ``[sources] timeout_s``."""
        own = self.source(name).timeout_s
        return self.source_timeout_s if own is None else own


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Read and validate a TOML configuration file; raises :class:`ConfigError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise configschema.unreadable(path, exc, ConfigError) from exc
    doc = configschema.parse_toml(raw, str(path), ConfigError)
    return parse_config(doc, str(path), base_dir=path.parent, environ=environ)


def parse_config(
    doc: Mapping[str, Any],
    source: str = "<config>",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Validate an already parsed TOML document; ``source`` names it in errors.

    A relative ``database`` path is resolved against ``base_dir`` when given (the directory
    of the configuration file). ``${NAME}`` in an upstream's ``url`` and ``headers`` is
    replaced by the variable from ``environ`` (default ``os.environ``), once, here.
    """
    file = configschema.load(doc, ServerFile, source, ConfigError, KeyPath.bracketed)
    check = _Check(source, os.environ if environ is None else environ)
    raw_sites: Mapping[str, Any] = doc.get("sites", {})
    policy = check.policy(doc.get("policy", {}), file.policy, SitePolicy(), ("policy",))
    sites = {
        name: check.policy(raw_sites[name], table, policy, ("sites", name))
        for name, table in file.sites.items()
    }
    raw_sources: Mapping[str, Any] = doc.get("sources", {})
    sources = {
        name: check.source(name, raw_sources[name], table)
        for name in SOURCE_NAMES
        if (table := getattr(file.sources, name)) is not None
    }
    database = file.server.database
    if base_dir is not None and not is_postgres(database) and not Path(database).is_absolute():
        database = str(base_dir / database)
    return ServerConfig(
        host=file.server.host,
        port=file.server.port,
        database=database,
        workers=file.server.workers,
        pool_size=file.server.pool_size,
        access_log=file.server.access_log,
        trusted_proxies=tuple(_networks(source, file.server.trusted_proxies)),
        audit_retention_days=file.audit.retention_days,
        policy=policy,
        sites=MappingProxyType(sites),
        source_timeout_s=file.sources.timeout_s,
        source_max_stale_s=file.sources.max_stale_s,
        source_cache_size=file.sources.cache_size,
        sources=MappingProxyType(sources),
        snapshot_max_people=file.snapshot.max_people,
        snapshot_cache_s=file.snapshot.cache_s,
        identity=file.identity,
        limits=file.limits,
        lookup=lookup_settings(file.lookup, source),
        alerts=file.alerts,
        releases=file.releases,
        metrics=file.metrics,
    )


def _networks(source: str, entries: Sequence[str]) -> list[str]:
    """Check each ``[server] trusted_proxies`` entry is an address or a network."""
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{source}: [server] trusted_proxies: {entry!r}: {exc}") from exc
    return list(entries)


def resolve_database(config_path: str | Path | None, database: str | Path | None) -> str:
    """The database a command-line verb uses (a SQLite file or a ``postgresql://`` URL):
    ``--database`` if given, else the config
    file's ``[server] database`` (relative to the config file's directory), else
    ``siheyi.db`` in the current directory. Raises :class:`ConfigError`."""
    if database:
        return str(database)
    if config_path:
        return load_config(config_path).database
    return ServerConfig().database


_HTTP_ONLY_KEYS = frozenset(f.encode_name for f in msgspec.structs.fields(SourceTable)) - {
    "type",
    "timeout_s",
}


@dataclass(frozen=True)
class _Check:
    """The rules a per-key schema cannot say, on a file the schema has accepted; errors
    name the file and the key like the schema's."""

    file: str
    environ: Mapping[str, str]

    def fail(self, table: tuple[str, ...], key: str | tuple[str, ...], message: str) -> ConfigError:
        where = KeyPath(table, (key,) if isinstance(key, str) else key)
        return ConfigError(f"{self.file}: {where.bracketed()}: {message}")

    def policy(
        self, raw: Mapping[str, Any], table: PolicyTable, base: SitePolicy, at: tuple[str, ...]
    ) -> SitePolicy:
        """``base`` with the keys ``raw`` sets; prompts and colours add to ``base``'s."""
        prompts, colours = dict(base.prompts), dict(base.colours)
        if "prompts" in raw:
            prompts.update({str(k): v for k, v in table.prompts.items()})
        for name, rule in table.colours.items():
            colours[name] = self.colour(rule, (*at, "colours", name))
        return replace(
            base,
            nat_window_hours=table.nat_window_hours
            if "nat_window_hours" in raw
            else base.nat_window_hours,
            min_doses=table.min_doses if "min_doses" in raw else base.min_doses,
            prompts=MappingProxyType(prompts),
            colours=MappingProxyType(colours),
        )

    def colour(self, rule: ColourTable, at: tuple[str, ...]) -> ColourRule:
        reason = rule.reason
        if reason is None:
            reason = "" if rule.passes else "code_not_green"
        if not rule.passes and not reason:
            raise self.fail(at, "reason", "a colour that checks needs a reason code")
        return ColourRule(passes=rule.passes, reason=reason, prompt=rule.prompt)

    def source(self, name: str, raw: Mapping[str, Any], table: SourceTable) -> SourceSettings:
        if table.type == "local":
            extra = sorted(_HTTP_ONLY_KEYS & raw.keys())
            if extra:
                raise self.fail(("sources", name), extra[0], 'only allowed with type = "http"')
            return SourceSettings("local", table.timeout_s)
        return SourceSettings("http", table.timeout_s, self.http(name, table))

    def http(self, name: str, table: SourceTable) -> HttpUpstream:
        at = ("sources", name)
        if table.url is None:
            raise self.fail(at, "url", 'required with type = "http"')
        url = self.url(table.url, at, "url", ID_PLACEHOLDER)
        method = table.method.upper()
        if method not in HTTP_METHODS:
            raise self.fail(at, "method", f"must be one of {', '.join(HTTP_METHODS)}")
        if table.body is not None:
            if method != "POST":
                raise self.fail(at, "body", 'only allowed with method = "POST"')
            self.json_template(table.body, at)
        if ID_PLACEHOLDER not in url and ID_PLACEHOLDER not in _strings(table.body):
            raise self.fail(at, "url", "needs {id_number} in the url or the body")
        resolve_url = None
        if table.resolve_url is not None:
            if name != "health_code":
                raise self.fail(at, "resolve_url", "only allowed for [sources.health_code]")
            resolve_url = self.url(table.resolve_url, at, "resolve_url", TOKEN_PLACEHOLDER)
            if TOKEN_PLACEHOLDER not in resolve_url:
                raise self.fail(at, "resolve_url", "needs {token} in the url")
        mapping = self.mapping(name, table.mapping, resolved=resolve_url is not None)
        for key in table.values:
            if key not in mapping:
                raise self.fail(
                    (*at, "values"), key, "translates a field that [mapping] does not map"
                )
        return HttpUpstream(
            url=url,
            method=method,
            body=table.body,
            headers=MappingProxyType(self.headers(table.headers, at)),
            mapping=MappingProxyType(mapping),
            values=MappingProxyType({k: MappingProxyType(v) for k, v in table.values.items()}),
            resolve_url=resolve_url,
        )

    def url(self, template: str, at: tuple[str, ...], key: str, placeholder: str) -> str:
        """An http(s) URL with ``${ENV}`` expanded, whose only placeholder is ``placeholder``."""
        url = self.expand(template, at, key)
        rest = url.replace(placeholder, "")
        if "{" in rest or "}" in rest:
            raise self.fail(at, key, f"the only placeholder allowed is {placeholder}")
        parts = urlsplit(rest)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.fail(at, key, "must be an http:// or https:// URL with a host")
        return url

    def headers(self, headers: Mapping[str, str], at: tuple[str, ...]) -> dict[str, str]:
        expanded = {
            name: self.expand(value, at, ("headers", name)) for name, value in headers.items()
        }
        for name, value in expanded.items():
            if any(c in value for c in "\r\n\0"):
                raise self.fail(at, ("headers", name), "must not contain line breaks or NUL")
        return expanded

    def mapping(self, name: str, mapping: Mapping[str, str], *, resolved: bool) -> dict[str, str]:
        """Our field → dotted path: only the kind's fields, every required one present."""
        at = ("sources", name, "mapping")
        fields = dict(MAPPED_FIELDS[name])
        if resolved:
            fields[RESOLVED_ID_FIELD] = True
        for key, path in mapping.items():
            if key == RESOLVED_ID_FIELD and name == "health_code" and not resolved:
                raise self.fail(at, key, "only allowed with resolve_url")
            if key not in fields:
                raise self.fail(at, key, f"unknown field; expected one of {', '.join(fields)}")
            if any(not part for part in path.split(".")):
                raise self.fail(at, key, f"not a dotted path: {path!r}")
        for key, required in fields.items():
            if required and key not in mapping:
                raise self.fail(at, key, "required")
        return dict(mapping)

    def expand(self, text: str, at: tuple[str, ...], key: str | tuple[str, ...]) -> str:
        """Replace every ``${NAME}`` by the environment variable (never echoed in errors)."""

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.environ:
                raise self.fail(at, key, f"environment variable {name} is not set")
            return self.environ[name]

        return _ENV_REF.sub(one, text)

    def json_template(self, value: Any, at: tuple[str, ...]) -> None:
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
            elif not isinstance(item, str | int | float | bool):
                raise self.fail(at, "body", f"cannot be sent as JSON: {type(item).__name__}")


def _strings(value: Any) -> str:
    """Every string inside a JSON-like template, joined (to look for the placeholder)."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return "\n".join(found)
