"""``[lookup]``: the guard lookup's rate limit, how much history it shows, and the recovery
texts a site configures (docs/lookup.md).

:class:`LookupTable` is the file's schema (the lead mounts it in ``server.config.ServerFile``
as ``lookup``); :func:`lookup_settings` checks what a schema cannot (placeholders) and gives
the frozen :class:`LookupSettings` the handler reads. Texts resolve per site, then fleet,
then the built-in ones (:mod:`server.lookup.texts`)::

    [lookup]
    max_per_window = 30
    window_s = 60

    [lookup.recovery.zh-CN]
    nat_expired = "请到 3 号楼核酸点检测（24 小时出结果）。"

    [lookup.sites."east-gate".recovery.en]
    travel_flag = "Report to the east-gate office before entering."
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from core import configschema
from core.configschema import NOT_BLANK, KeyPath
from core.policy import SitePolicy
from server.errors import ConfigError
from server.lookup.texts import DEFAULTS, FALLBACK, LANGS, PLACEHOLDERS, Lang

_Text = Annotated[str, Meta(pattern=NOT_BLANK, max_length=1000)]
_Reason = Annotated[str, Meta(pattern=r"\A[a-z0-9_:]{1,64}\Z")]
_Texts = Annotated[
    dict[_Reason, _Text],
    Meta(
        description="recovery text per reason code; {nat_window_hours} and {min_doses} are "
        "the site's numbers",
        extra={"key": "reason"},
    ),
]


class RecoveryTable(Struct, frozen=True, forbid_unknown_fields=True):
    """Recovery texts per language; a reason not given keeps the inherited text."""

    zh_cn: _Texts = msgspec.field(default_factory=dict, name="zh-CN")
    en: _Texts = msgspec.field(default_factory=dict)


class LookupSiteTable(Struct, frozen=True, forbid_unknown_fields=True):
    """``[lookup.sites."<site>"]``: one site's own recovery texts."""

    recovery: RecoveryTable = RecoveryTable()


class LookupTable(Struct, frozen=True, forbid_unknown_fields=True):
    """``[lookup]``: the guard's 一键三查 lookup."""

    max_per_window: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000,
            description="lookups one guard may make within window_s (all server processes "
            "together); more are 429",
        ),
    ] = 30
    window_s: Annotated[
        float, Meta(ge=1, le=86_400, description="the rate limit's sliding window")
    ] = 60.0
    nat_results: Annotated[
        int, Meta(ge=1, le=50, description="how many of the latest NAT results are shown")
    ] = 5
    recovery: RecoveryTable = RecoveryTable()
    sites: Annotated[
        dict[Annotated[str, Meta(pattern=NOT_BLANK)], LookupSiteTable],
        Meta(
            description='per-site recovery texts (`[lookup.sites."east-gate".recovery.en]`); '
            "a reason not given there uses [lookup.recovery], then the built-in text",
            extra={"key": "site"},
        ),
    ] = {}


Texts = Mapping[Lang, Mapping[str, str]]
_NO_TEXTS: Texts = MappingProxyType({lang: MappingProxyType({}) for lang in LANGS})


@dataclass(frozen=True)
class Recovery:
    """How to get back to a pass from one failing reason."""

    reason: str
    text: str


@dataclass(frozen=True)
class LookupSettings:
    """``[lookup]`` checked; :meth:`recovery` resolves the texts."""

    max_per_window: int = 30
    window_s: float = 60.0
    nat_results: int = 5
    fleet: Texts = field(default_factory=lambda: _NO_TEXTS)
    sites: Mapping[str, Texts] = field(default_factory=lambda: MappingProxyType({}))

    def text(self, site: str, lang: Lang, reason: str) -> str:
        """The text for ``reason`` at ``site``: the site's, the fleet's, the built-in one, a
        text configured only in the other language, else :data:`FALLBACK`."""
        own = self.sites.get(site, _NO_TEXTS)
        other: Lang = "en" if lang == "zh-CN" else "zh-CN"
        for texts in (own[lang], self.fleet[lang], DEFAULTS[lang], own[other], self.fleet[other]):
            found = texts.get(reason)
            if found is not None:
                return found
        return FALLBACK[lang]

    def recovery(
        self, site: str, reasons: Sequence[str], policy: SitePolicy, lang: Lang = "zh-CN"
    ) -> list[Recovery]:
        """One text per reason, in the decision's order, the site's numbers filled in."""
        numbers = _numbers(policy)
        return [Recovery(r, self.text(site, lang, r).format_map(numbers)) for r in reasons]


DEFAULT_SETTINGS = LookupSettings()


def _numbers(policy: SitePolicy) -> dict[str, Any]:
    window = float(policy.nat_window_hours)
    return {
        "nat_window_hours": int(window) if window.is_integer() else window,
        "min_doses": policy.min_doses,
    }


def load_lookup(doc: Mapping[str, Any], source: str = "<config>") -> LookupSettings:
    """``[lookup]`` of a parsed TOML document (``doc`` is the whole file) checked into
    :class:`LookupSettings`; raises :class:`ConfigError` naming ``source`` and the key."""
    table = configschema.load(
        doc.get("lookup", {}), LookupTable, source, ConfigError, KeyPath.bracketed, ("lookup",)
    )
    return lookup_settings(table, source)


def lookup_settings(table: LookupTable, source: str = "<config>") -> LookupSettings:
    """:class:`LookupSettings` from an already validated :class:`LookupTable`; a text with a
    placeholder other than ``{nat_window_hours}`` / ``{min_doses}`` (or a stray brace, which
    must be doubled) is a :class:`ConfigError`."""
    fleet = _texts(table.recovery, source, ("lookup", "recovery"))
    sites = {
        name: _texts(site.recovery, source, ("lookup", "sites", name, "recovery"))
        for name, site in table.sites.items()
    }
    return LookupSettings(
        max_per_window=table.max_per_window,
        window_s=table.window_s,
        nat_results=table.nat_results,
        fleet=fleet,
        sites=MappingProxyType(sites),
    )


def _texts(table: RecoveryTable, source: str, at: tuple[str, ...]) -> Texts:
    by_lang: dict[Lang, dict[str, str]] = {"zh-CN": table.zh_cn, "en": table.en}
    for lang, texts in by_lang.items():
        for reason, text in texts.items():
            problem = placeholder_problem(text)
            if problem:
                where = KeyPath(at, (lang, reason)).bracketed()
                raise ConfigError(f"{source}: {where}: {problem}")
    return MappingProxyType({lang: MappingProxyType(dict(t)) for lang, t in by_lang.items()})


def placeholder_problem(text: str) -> str:
    """What is wrong with the placeholders of ``text`` ("" when nothing)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        text.format_map(dict.fromkeys(PLACEHOLDERS, 0))
    except (ValueError, KeyError, IndexError, AttributeError):
        fields = None
    allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    if fields is None or any(f not in PLACEHOLDERS for f in fields):
        return f"the only placeholders are {allowed} (write {{{{ and }}}} for a brace)"
    return ""
