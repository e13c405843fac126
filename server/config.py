"""Server configuration: a frozen dataclass loaded from TOML and validated once, up front.

Every error names the file and the key (``siheyi.toml: [policy] min_doses: must be …``);
unknown keys are rejected so a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from server.errors import ConfigError

OUTCOMES = ("pass", "check", "nat_expired", "invalid_credential")

DEFAULT_PROMPTS: Mapping[str, str] = MappingProxyType(
    {
        "pass": "绿码通行",
        "check": "非绿码请核查",
        "nat_expired": "你的核酸结果已超时",
        "invalid_credential": "证件无效，请重新刷卡",
    }
)


@dataclass(frozen=True)
class SitePolicy:
    """The decision policy applied to one site (the fleet default or a site override)."""

    nat_window_hours: float = 48.0
    min_doses: int = 0
    prompts: Mapping[str, str] = field(default_factory=lambda: DEFAULT_PROMPTS)

    def prompt(self, outcome: str) -> str:
        """Return the prompt text spoken for ``outcome``."""
        return self.prompts[outcome]


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server process needs; build with :func:`load_config` or :meth:`default`."""

    host: str = "127.0.0.1"
    port: int = 8080
    database: str = "siheyi.db"
    policy: SitePolicy = field(default_factory=SitePolicy)
    sites: Mapping[str, SitePolicy] = field(default_factory=lambda: MappingProxyType({}))
    source_timeout_s: float = 0.3

    @classmethod
    def default(cls, database: str | Path = "siheyi.db", **overrides: Any) -> ServerConfig:
        """Return the built-in defaults with ``database`` (and any other field) replaced."""
        return replace(cls(database=str(database)), **overrides)

    def policy_for(self, site: str) -> SitePolicy:
        """Return the policy of ``site``: its override if any, else the fleet default."""
        return self.sites.get(site, self.policy)


_TOP_KEYS = frozenset({"server", "policy", "sites", "sources"})
_SERVER_KEYS = frozenset({"host", "port", "database"})
_POLICY_KEYS = frozenset({"nat_window_hours", "min_doses", "prompts"})
_SOURCES_KEYS = frozenset({"timeout_s"})


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
        return SitePolicy(window, min_doses, MappingProxyType(prompts))


def parse_config(
    doc: Mapping[str, Any], source: str = "<config>", base_dir: Path | None = None
) -> ServerConfig:
    """Validate an already parsed TOML document; ``source`` names it in errors.

    A relative ``database`` path is resolved against ``base_dir`` when given (the directory
    of the configuration file).
    """
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
    check.no_unknown(sources, _SOURCES_KEYS, "[sources]")
    timeout = default.source_timeout_s
    if "timeout_s" in sources:
        timeout = check.positive(sources["timeout_s"], "[sources] timeout_s", 60)

    return ServerConfig(
        host=host,
        port=port,
        database=database,
        policy=policy,
        sites=MappingProxyType(sites),
        source_timeout_s=timeout,
    )


def load_config(path: str | Path) -> ServerConfig:
    """Read and validate a TOML configuration file; raises :class:`ConfigError`."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return parse_config(doc, str(path), base_dir=path.parent)


def resolve_database(config_path: str | Path | None, database: str | Path | None) -> str:
    """The SQLite file a command-line verb uses: ``--database`` if given, else the config
    file's ``[server] database`` (relative to the config file's directory), else
    ``siheyi.db`` in the current directory. Raises :class:`ConfigError`."""
    if database:
        return str(database)
    if config_path:
        return load_config(config_path).database
    return ServerConfig().database
