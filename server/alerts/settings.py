"""``[alerts]``: thresholds and the webhook, fleet-wide with per-site overrides.

The Structs are the schema of the configuration file's ``[alerts]`` and
``[alerts.sites."<site>"]`` tables (server/config.py nests :class:`AlertSettings` in its
``ServerFile``); this module imports nothing of the server, so config.py may import it.
A site's table sets only the keys it changes: :meth:`AlertSettings.for_site` fills the rest
from the fleet table.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct

from core import configschema
from core.configschema import NOT_BLANK, KeyPath
from server.errors import ConfigError

_Threshold = Annotated[
    int, Meta(ge=1, le=100_000, description="invalid-credential taps at one gate that raise")
]
_Window = Annotated[
    float, Meta(ge=10, le=86_400, description="seconds over which invalid taps are counted")
]
_Backlog = Annotated[
    int, Meta(ge=1, le=10_000_000, description="journal events not yet uploaded that raise")
]
_Beats = Annotated[
    int, Meta(ge=2, le=100, description="heartbeats in a row of a rising backlog that raise")
]
_RisingMin = Annotated[
    int, Meta(ge=0, le=10_000_000, description="a rising backlog raises only from this size")
]
_Quiet = Annotated[
    float,
    Meta(ge=60, le=30 * 86_400, description="an audit chain alert clears after this long quiet"),
]
_Webhook = Annotated[
    str, Meta(max_length=2000, description='http(s) URL POSTed each alert change ("": none)')
]
_Timeout = Annotated[float, Meta(gt=0, le=60, description="webhook request timeout, seconds")]
_Retry = Annotated[
    float,
    Meta(gt=0, le=3600, description="first webhook retry after this many seconds, then doubling"),
]
_Attempts = Annotated[
    int, Meta(ge=1, le=100, description="webhook attempts per alert change before giving up")
]
#: The longest pause between two webhook attempts, whatever the doubling reached.
MAX_RETRY_S = 600.0


def _check_webhook(url: str) -> None:
    """A webhook is an absolute http(s) URL with a host, or empty."""
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("webhook: must be an http:// or https:// URL with a host")


class SiteAlerts(Struct, frozen=True, forbid_unknown_fields=True):
    """``[alerts.sites."<site>"]``: the keys of ``[alerts]`` one site sets differently."""

    invalid_threshold: _Threshold | None = None
    invalid_window_s: _Window | None = None
    backlog_threshold: _Backlog | None = None
    backlog_beats: _Beats | None = None
    backlog_rising_min: _RisingMin | None = None
    audit_quiet_s: _Quiet | None = None
    webhook: _Webhook | None = None
    webhook_timeout_s: _Timeout | None = None
    webhook_retry_s: _Retry | None = None
    webhook_attempts: _Attempts | None = None

    def __post_init__(self) -> None:
        _check_webhook(self.webhook or "")


class AlertSettings(Struct, frozen=True, forbid_unknown_fields=True):
    """``[alerts]``: when the server raises an alert and where it POSTs it (docs/alerts.md)."""

    invalid_threshold: _Threshold = 5
    invalid_window_s: _Window = 300.0
    backlog_threshold: _Backlog = 500
    backlog_beats: _Beats = 5
    backlog_rising_min: _RisingMin = 50
    audit_quiet_s: _Quiet = 3600.0
    webhook: _Webhook = ""
    webhook_timeout_s: _Timeout = 5.0
    webhook_retry_s: _Retry = 5.0
    webhook_attempts: _Attempts = 10
    sites: Annotated[
        dict[Annotated[str, Meta(pattern=NOT_BLANK)], SiteAlerts],
        Meta(
            description='per-site overrides (`[alerts.sites."east-gate"]`): the keys of '
            "[alerts]; a key not set is inherited",
            extra={"key": "site", "collapse": True},
        ),
    ] = {}

    def __post_init__(self) -> None:
        _check_webhook(self.webhook)

    def for_site(self, site: str) -> AlertSettings:
        """The settings that apply at ``site``: its overrides over the fleet's (no ``sites``)."""
        own = self.sites.get(site)
        changed: dict[str, Any] = {}
        if own is not None:
            changed = {
                name: value
                for name in own.__struct_fields__
                if (value := getattr(own, name)) is not None
            }
        return msgspec.structs.replace(self, sites={}, **changed)

    def webhook_sites(self) -> bool:
        """Whether any site (or the fleet) has a webhook: else nothing is ever queued."""
        return bool(self.webhook) or any(s.webhook for s in self.sites.values())

    def retry_after(self, attempts: int) -> float:
        """Seconds before the next webhook attempt after ``attempts`` failed ones."""
        return float(min(self.webhook_retry_s * 2 ** max(attempts - 1, 0), MAX_RETRY_S))


def settings_from(doc: dict[str, Any], source: str = "<config>") -> AlertSettings:
    """The ``[alerts]`` table of a parsed TOML document, checked; :class:`ConfigError`
    naming the key otherwise (for callers that do not nest :class:`AlertSettings` in their
    own schema)."""
    return configschema.load(
        doc, AlertSettings, source, ConfigError, KeyPath.bracketed, prefix=("alerts",)
    )
