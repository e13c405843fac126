"""Server configuration: a frozen dataclass loaded from TOML and validated once, up front.

Every error names the file and the key (``siheyi.toml: [policy] min_doses: must be …``);
unknown keys are rejected so a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from core.checks import MAPPED_FIELDS, SOURCE_NAMES
from core.outcomes import DECISIONS
from core.policy import DEFAULT_MAX_STALE_S, ColourRule, SitePolicy
from server.errors import ConfigError

OUTCOMES = tuple(sorted(o.value for o in DECISIONS))

SOURCE_TYPES = ("local", "http")
HTTP_METHODS = ("GET", "POST")
ID_PLACEHOLDER = "{id_number}"
TOKEN_PLACEHOLDER = "{token}"
#: The mapping field that tells where a token-resolve answer holds the ID number.
RESOLVED_ID_FIELD = "id_number"


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class HttpUpstream:
    """Where and how a source asks a remote service, and how its JSON maps onto our fields.

    ``headers`` are already ``${ENV}``-expanded and hold secrets: they are left out of the
    ``repr`` so a logged configuration never shows them.
    """

    url: str
    method: str = "GET"
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=_frozen, repr=False)
    mapping: Mapping[str, str] = field(default_factory=_frozen)
    values: Mapping[str, Mapping[str, Any]] = field(default_factory=_frozen)
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
class IdentitySettings:
    """Kiosk identity and sessions (``[identity]``, docs/identity.md)."""

    session_ttl_s: float = 900.0  # session token lifetime
    challenge_ttl_s: float = 60.0  # a session challenge (nonce) must be answered within this
    enrol_code_ttl_s: float = 900.0  # default lifetime of an enrolment code
    clock_skew_s: float = 300.0  # kiosk clock error tolerated at session start
    status_sync_s: float = 1.0  # cached device status is at most this old (0: read per request)
    admin_token_ttl_s: float = 3600.0  # admin bearer token lifetime
    replay_window: int = 4096  # tap ids remembered per device for replay detection


@dataclass(frozen=True)
class LimitSettings:
    """Overload protection (``[limits]``): beyond these a request gets ``429`` + Retry-After."""

    session_per_s: float = 500.0  # challenges + sessions per second (token bucket)
    session_burst: int = 1000
    enrol_per_s: float = 20.0  # enrolment attempts per second
    login_per_s: float = 2.0  # admin logins per second (argon2 is deliberately slow)
    device_inflight: int = 4096  # device requests handled at once
    admin_inflight: int = 4  # admin requests handled at once


#: ``[identity]`` / ``[limits]`` keys: (kind, low, high); kind "n" number, "i" integer.
IDENTITY_BOUNDS: Mapping[str, tuple[str, float, float]] = MappingProxyType(
    {
        "session_ttl_s": ("n", 60, 86400),
        "challenge_ttl_s": ("n", 5, 600),
        "enrol_code_ttl_s": ("n", 60, 7 * 86400),
        "clock_skew_s": ("n", 1, 86400),
        "status_sync_s": ("n", 0, 60),
        "admin_token_ttl_s": ("n", 60, 86400),
        "replay_window": ("i", 16, 1_000_000),
    }
)
LIMIT_BOUNDS: Mapping[str, tuple[str, float, float]] = MappingProxyType(
    {
        "session_per_s": ("n", 1, 100_000),
        "session_burst": ("i", 1, 1_000_000),
        "enrol_per_s": ("n", 0.1, 10_000),
        "login_per_s": ("n", 0.1, 1000),
        "device_inflight": ("i", 1, 1_000_000),
        "admin_inflight": ("i", 1, 1000),
    }
)


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server process needs; build with :func:`load_config` or :meth:`default`."""

    host: str = "127.0.0.1"
    port: int = 8080
    database: str = "siheyi.db"
    policy: SitePolicy = field(default_factory=SitePolicy)
    sites: Mapping[str, SitePolicy] = field(default_factory=lambda: MappingProxyType({}))
    source_timeout_s: float = 0.3
    source_max_stale_s: float = DEFAULT_MAX_STALE_S
    source_cache_size: int = 100_000
    sources: Mapping[str, SourceSettings] = field(default_factory=lambda: MappingProxyType({}))
    snapshot_max_people: int = 50_000
    snapshot_cache_s: float = 60.0
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    limits: LimitSettings = field(default_factory=LimitSettings)

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


_TOP_KEYS = frozenset({"server", "policy", "sites", "sources", "snapshot", "identity", "limits"})
_SERVER_KEYS = frozenset({"host", "port", "database"})
_POLICY_KEYS = frozenset({"nat_window_hours", "min_doses", "prompts", "colours"})
_COLOUR_KEYS = frozenset({"passes", "reason", "prompt"})
_SOURCES_KEYS = frozenset({"timeout_s", "max_stale_s", "cache_size"})
_SOURCE_KEYS = frozenset(
    {"type", "timeout_s", "url", "method", "body", "headers", "mapping", "values", "resolve_url"}
)
_HTTP_ONLY_KEYS = _SOURCE_KEYS - {"type", "timeout_s"}
_SNAPSHOT_KEYS = frozenset({"max_people", "cache_s"})
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class _Checker:
    """Validates one parsed TOML document, raising errors that name file and key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {message}")

    def table(self, doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(where, "must be a table")
        return value

    def no_unknown(self, table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{where} {key}", "unknown key")

    def string(self, value: Any, where: str, *, empty_ok: bool = False) -> str:
        if not isinstance(value, str) or (not empty_ok and not value.strip()):
            raise self.fail(where, "must be a non-empty string")
        return value

    def integer(self, value: Any, where: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(where, f"must be an integer in [{lo}, {hi}], got {value!r}")
        return value

    def positive(self, value: Any, where: str, hi: float) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not 0 < value <= hi:
            raise self.fail(where, f"must be a number in (0, {hi}], got {value!r}")
        return float(value)

    def non_negative(self, value: Any, where: str, hi: float) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not 0 <= value <= hi:
            raise self.fail(where, f"must be a number in [0, {hi}], got {value!r}")
        return float(value)

    def bounded(
        self, doc: Mapping[str, Any], name: str, bounds: Mapping[str, tuple[str, float, float]]
    ) -> dict[str, Any]:
        """A table of plain numbers with bounds (``[identity]``, ``[limits]``)."""
        table = self.table(doc, name, f"[{name}]")
        self.no_unknown(table, frozenset(bounds), f"[{name}]")
        out: dict[str, Any] = {}
        for key, value in table.items():
            kind, lo, hi = bounds[key]
            where = f"[{name}] {key}"
            if kind == "i":
                out[key] = self.integer(value, where, int(lo), int(hi))
                continue
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or not lo <= value <= hi:
                raise self.fail(where, f"must be a number in [{lo}, {hi}], got {value!r}")
            out[key] = float(value)
        return out

    def expand(self, text: str, where: str, environ: Mapping[str, str]) -> str:
        """Replace every ``${NAME}`` by the environment variable (never echoed in errors)."""

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise self.fail(where, f"environment variable {name} is not set")
            return environ[name]

        return _ENV_REF.sub(one, text)

    def source_settings(
        self, name: str, table: Mapping[str, Any], environ: Mapping[str, str]
    ) -> SourceSettings:
        where = f"[sources.{name}]"
        self.no_unknown(table, _SOURCE_KEYS, where)
        kind = table.get("type", "local")
        if kind not in SOURCE_TYPES:
            raise self.fail(f"{where} type", f"must be one of {', '.join(SOURCE_TYPES)}")
        timeout = None
        if "timeout_s" in table:
            timeout = self.positive(table["timeout_s"], f"{where} timeout_s", 60)
        if kind == "local":
            extra = sorted(_HTTP_ONLY_KEYS & table.keys())
            if extra:
                raise self.fail(f"{where} {extra[0]}", 'only allowed with type = "http"')
            return SourceSettings("local", timeout)
        return SourceSettings("http", timeout, self.http(name, table, where, environ))

    def http(
        self, name: str, table: Mapping[str, Any], where: str, environ: Mapping[str, str]
    ) -> HttpUpstream:
        if "url" not in table:
            raise self.fail(f"{where} url", 'required with type = "http"')
        url = self.expand(self.string(table["url"], f"{where} url"), f"{where} url", environ)
        rest = url.replace(ID_PLACEHOLDER, "")
        if "{" in rest or "}" in rest:
            raise self.fail(f"{where} url", "the only placeholder allowed is {id_number}")
        parts = urlsplit(rest)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.fail(f"{where} url", "must be an http:// or https:// URL with a host")
        method = self.string(table.get("method", "GET"), f"{where} method").upper()
        if method not in HTTP_METHODS:
            raise self.fail(f"{where} method", f"must be one of {', '.join(HTTP_METHODS)}")
        body = table.get("body")
        if body is not None:
            if method != "POST":
                raise self.fail(f"{where} body", 'only allowed with method = "POST"')
            self.json_template(body, f"{where} body")
        if ID_PLACEHOLDER not in url and ID_PLACEHOLDER not in _strings(body):
            raise self.fail(f"{where} url", "needs {id_number} in the url or the body")
        headers: dict[str, str] = {}
        raw_headers = self.table(table, "headers", f"{where} headers")
        for header, value in raw_headers.items():
            at = f"{where} headers.{header}"
            if not _HEADER_NAME.fullmatch(header):
                raise self.fail(at, "not a valid HTTP header name")
            expanded = self.expand(self.string(value, at, empty_ok=True), at, environ)
            if any(c in expanded for c in "\r\n\0"):
                raise self.fail(at, "must not contain line breaks or NUL")
            headers[header] = expanded
        fields = dict(MAPPED_FIELDS[name])
        resolve_url = None
        if "resolve_url" in table:
            if name != "health_code":
                raise self.fail(f"{where} resolve_url", "only allowed for [sources.health_code]")
            resolve_url = self.resolve_url(table["resolve_url"], f"{where} resolve_url", environ)
            fields[RESOLVED_ID_FIELD] = True
        mapping: dict[str, str] = {}
        raw_mapping = self.table(table, "mapping", f"{where} mapping")
        for key, path in raw_mapping.items():
            at = f"[sources.{name}.mapping] {key}"
            if key == RESOLVED_ID_FIELD and name == "health_code" and resolve_url is None:
                raise self.fail(at, "only allowed with resolve_url")
            if key not in fields:
                raise self.fail(at, f"unknown field; expected one of {', '.join(fields)}")
            path = self.string(path, at)
            if any(not part for part in path.split(".")):
                raise self.fail(at, f"not a dotted path: {path!r}")
            mapping[key] = path
        for key, required in fields.items():
            if required and key not in mapping:
                raise self.fail(f"[sources.{name}.mapping] {key}", "required")
        values: dict[str, Mapping[str, Any]] = {}
        raw_values = self.table(table, "values", f"{where} values")
        for key, table_ in raw_values.items():
            at = f"[sources.{name}.values] {key}"
            if key not in mapping:
                raise self.fail(at, "translates a field that [mapping] does not map")
            if not isinstance(table_, dict):
                raise self.fail(at, "must be a table of upstream value = our value")
            for upstream, ours in table_.items():
                if not isinstance(ours, str | int | float | bool):
                    raise self.fail(f"{at}.{upstream}", "must be a string, number or boolean")
            values[key] = MappingProxyType(dict(table_))
        return HttpUpstream(
            url=url,
            method=method,
            body=body,
            headers=MappingProxyType(headers),
            mapping=MappingProxyType(mapping),
            values=MappingProxyType(values),
            resolve_url=resolve_url,
        )

    def resolve_url(self, value: Any, where: str, environ: Mapping[str, str]) -> str:
        """A GET URL template whose only placeholder, ``{token}``, is required."""
        url = self.expand(self.string(value, where), where, environ)
        if TOKEN_PLACEHOLDER not in url:
            raise self.fail(where, "needs {token} in the url")
        rest = url.replace(TOKEN_PLACEHOLDER, "")
        if "{" in rest or "}" in rest:
            raise self.fail(where, "the only placeholder allowed is {token}")
        parts = urlsplit(rest)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.fail(where, "must be an http:// or https:// URL with a host")
        return url

    def json_template(self, value: Any, where: str) -> None:
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
            elif not isinstance(item, str | int | float | bool):
                raise self.fail(where, f"cannot be sent as JSON: {type(item).__name__}")

    def policy(
        self, table: Mapping[str, Any], base: SitePolicy, where: str, allowed: frozenset[str]
    ) -> SitePolicy:
        self.no_unknown(table, allowed, where)
        window = base.nat_window_hours
        if "nat_window_hours" in table:
            window = self.positive(table["nat_window_hours"], f"{where} nat_window_hours", 8760)
        min_doses = base.min_doses
        if "min_doses" in table:
            min_doses = self.integer(table["min_doses"], f"{where} min_doses", 0, 10)
        prompts = dict(base.prompts)
        if "prompts" in table:
            raw = table["prompts"]
            if not isinstance(raw, dict):
                raise self.fail(f"{where} prompts", "must be a table")
            for outcome, text in raw.items():
                if outcome not in OUTCOMES:
                    raise self.fail(f"{where} prompts.{outcome}", "unknown key")
                prompts[outcome] = self.string(text, f"{where} prompts.{outcome}")
        colours = dict(base.colours)
        if "colours" in table:
            raw = table["colours"]
            if not isinstance(raw, dict):
                raise self.fail(f"{where} colours", "must be a table")
            for name, rule in raw.items():
                colours[name] = self.colour(rule, f"{where} colours.{name}")
        return SitePolicy(window, min_doses, MappingProxyType(prompts), MappingProxyType(colours))

    def colour(self, rule: Any, where: str) -> ColourRule:
        if not isinstance(rule, dict):
            raise self.fail(where, "must be a table with passes, reason and prompt")
        self.no_unknown(rule, _COLOUR_KEYS, where)
        if not isinstance(rule.get("passes"), bool):
            raise self.fail(f"{where}.passes", "must be true or false")
        reason = rule.get("reason", "" if rule["passes"] else "code_not_green")
        if not isinstance(reason, str) or not re.fullmatch(r"[a-z0-9_:]{0,64}", reason):
            raise self.fail(f"{where}.reason", "must be a reason code (a-z, 0-9, _ and :)")
        if not rule["passes"] and not reason:
            raise self.fail(f"{where}.reason", "a colour that checks needs a reason code")
        prompt = self.string(rule["prompt"], f"{where}.prompt") if "prompt" in rule else None
        return ColourRule(passes=rule["passes"], reason=reason, prompt=prompt)


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
    environ = os.environ if environ is None else environ
    check = _Checker(source)
    check.no_unknown(doc, _TOP_KEYS, "top level:")
    default = ServerConfig()

    server = check.table(doc, "server", "[server]")
    check.no_unknown(server, _SERVER_KEYS, "[server]")
    host = check.string(server.get("host", default.host), "[server] host")
    port = check.integer(server.get("port", default.port), "[server] port", 0, 65535)
    database = check.string(server.get("database", default.database), "[server] database")
    if base_dir is not None and not Path(database).is_absolute():
        database = str(base_dir / database)

    policy_table = check.table(doc, "policy", "[policy]")
    policy = check.policy(policy_table, default.policy, "[policy]", _POLICY_KEYS)

    sites_table = check.table(doc, "sites", "[sites]")
    sites: dict[str, SitePolicy] = {}
    for site, overrides in sites_table.items():
        where = f'[sites."{site}"]'
        if not site.strip():
            raise check.fail(where, "site name must not be empty")
        if not isinstance(overrides, dict):
            raise check.fail(where, "must be a table")
        sites[site] = check.policy(overrides, policy, where, _POLICY_KEYS)

    sources = check.table(doc, "sources", "[sources]")
    check.no_unknown(sources, _SOURCES_KEYS | frozenset(SOURCE_NAMES), "[sources]")
    timeout = default.source_timeout_s
    if "timeout_s" in sources:
        timeout = check.positive(sources["timeout_s"], "[sources] timeout_s", 60)
    max_stale = default.source_max_stale_s
    if "max_stale_s" in sources:
        max_stale = check.positive(sources["max_stale_s"], "[sources] max_stale_s", 7 * 86400)
    cache_size = default.source_cache_size
    if "cache_size" in sources:
        cache_size = check.integer(sources["cache_size"], "[sources] cache_size", 0, 10_000_000)
    per_source: dict[str, SourceSettings] = {}
    for name in SOURCE_NAMES:
        if name in sources:
            table = check.table(sources, name, f"[sources.{name}]")
            per_source[name] = check.source_settings(name, table, environ)

    snapshot = check.table(doc, "snapshot", "[snapshot]")
    check.no_unknown(snapshot, _SNAPSHOT_KEYS, "[snapshot]")
    max_people = default.snapshot_max_people
    if "max_people" in snapshot:
        max_people = check.integer(snapshot["max_people"], "[snapshot] max_people", 1, 1_000_000)
    cache_s = default.snapshot_cache_s
    if "cache_s" in snapshot:
        cache_s = check.non_negative(snapshot["cache_s"], "[snapshot] cache_s", 3600)

    return ServerConfig(
        host=host,
        port=port,
        database=database,
        policy=policy,
        sites=MappingProxyType(sites),
        source_timeout_s=timeout,
        source_max_stale_s=max_stale,
        source_cache_size=cache_size,
        sources=MappingProxyType(per_source),
        snapshot_max_people=max_people,
        snapshot_cache_s=cache_s,
        identity=IdentitySettings(**check.bounded(doc, "identity", IDENTITY_BOUNDS)),
        limits=LimitSettings(**check.bounded(doc, "limits", LIMIT_BOUNDS)),
    )


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Read and validate a TOML configuration file; raises :class:`ConfigError`."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return parse_config(doc, str(path), base_dir=path.parent, environ=environ)


def resolve_database(config_path: str | Path | None, database: str | Path | None) -> str:
    """The SQLite file a command-line verb uses: ``--database`` if given, else the config
    file's ``[server] database`` (relative to the config file's directory), else
    ``siheyi.db`` in the current directory. Raises :class:`ConfigError`."""
    if database:
        return str(database)
    if config_path:
        return load_config(config_path).database
    return ServerConfig().database
