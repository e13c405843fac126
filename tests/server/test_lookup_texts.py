"""The lookup's pure parts: phone normalisation, recovery texts and ``[lookup]`` settings."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from core import configschema
from core.checks import Checks, HealthCode, NatResult, SourceResult, Travel, Vaccination
from core.policy import ColourRule, SitePolicy, decide
from server.errors import ConfigError
from server.lookup.phones import normalise_phone, phone_hash
from server.lookup.settings import DEFAULT_SETTINGS, load_lookup
from server.lookup.texts import DEFAULTS, FALLBACK, REASONS

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("13800138000", "+8613800138000"),
        ("138 0013 8000", "+8613800138000"),
        ("+86 138-0013-8000", "+8613800138000"),
        ("+86(138)00138000", "+8613800138000"),
        ("008613800138000", "+8613800138000"),
        ("8613800138000", "+8613800138000"),
        ("１３８００１３８０００", "+8613800138000"),  # full-width digits
        (" 19912345678 ", "+8619912345678"),
        ("+852 9123 4567", "+85291234567"),
        ("00852-9123-4567", "+85291234567"),
        ("+1 (415) 555-0100", "+14155550100"),
    ],
)
def test_phone_normalised(text: str, canonical: str) -> None:
    assert normalise_phone(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12800138000",  # no mobile prefix 12
        "1380013800",  # 10 digits
        "138001380000",  # 12 digits
        "+86 010 6552 9988",  # a landline is not looked up
        "+8612800138000",
        "91234567",  # a foreign number without its country code
        "13800l38000",  # a letter
        "+0123456789",
        "+1234567",  # too short for E.164
        "138\u0663001380000",  # Arabic-Indic digit
    ],
)
def test_not_a_phone(text: str) -> None:
    assert normalise_phone(text) is None


def test_phone_hash_is_keyed() -> None:
    a = phone_hash(b"k" * 32, "+8613800138000")
    assert a == phone_hash(b"k" * 32, "+8613800138000")
    assert a != phone_hash(b"j" * 32, "+8613800138000")
    assert len(a) == 64 and "13800138000" not in a


def _every_decision_reason() -> set[str]:
    """Every reason core.policy.decide gives, over every branch of every source."""
    fresh, old = NOW - timedelta(hours=3), NOW - timedelta(hours=100)
    codes: list[SourceResult[Any]] = [
        SourceResult.failed("timeout"),
        SourceResult.missing(),
        *(SourceResult.ok(HealthCode(c, "", fresh)) for c in ("green", "yellow", "purple")),
    ]
    nats: list[SourceResult[Any]] = [
        SourceResult.failed("timeout"),
        SourceResult.missing(),
        *(
            SourceResult.ok(NatResult(r, at, "lab"))
            for r, at in (("negative", fresh), ("negative", old), ("positive", fresh))
        ),
    ]
    vacs: list[SourceResult[Any]] = [
        SourceResult.failed("timeout"),
        SourceResult.missing(),
        SourceResult.ok(Vaccination(1, date(2021, 5, 1))),
        SourceResult.ok(Vaccination(3, date(2021, 5, 1))),
    ]
    travels: list[SourceResult[Any]] = [
        SourceResult.failed("timeout"),
        SourceResult.missing(),
        *(SourceResult.ok(Travel(f, "area", fresh)) for f in (True, False)),
    ]
    policy = SitePolicy(min_doses=2)
    found = {"bad_checksum", "unknown_qr"}  # server.verify.service's invalid reasons
    for combo in itertools.product(codes, nats, vacs, travels):
        found.update(decide(Checks(*combo), NOW, policy).reasons)
    return found


def _kiosk_reasons() -> set[str]:
    """The reasons the kiosk adds offline (device/deciding: ``(*reasons, "…")``)."""
    found: set[str] = set()
    for path in (ROOT / "device" / "deciding").glob("*.py"):
        found.update(re.findall(r'\(\*[a-z_.]*reasons, "([a-z_:]+)"\)', path.read_text()))
    return found


def test_every_reason_code_has_a_text_in_both_languages() -> None:
    decided = _every_decision_reason()
    kiosk = _kiosk_reasons()
    assert {"nat_expired", "travel_flag", "source_error:vaccination"} <= decided
    assert {"clock_untrusted", "cache_unavailable"} <= kiosk
    missing = (decided | kiosk) - REASONS
    assert not missing, f"reason codes without a recovery text: {sorted(missing)}"
    for lang, texts in DEFAULTS.items():
        assert set(texts) == REASONS, lang
        assert all(t.strip() and t != FALLBACK[lang] for t in texts.values())


def test_defaults_fill_in_the_site_numbers() -> None:
    policy = SitePolicy(nat_window_hours=72, min_doses=3)
    zh = DEFAULT_SETTINGS.recovery("s", ["nat_expired", "doses_below_minimum"], policy)
    assert [r.reason for r in zh] == ["nat_expired", "doses_below_minimum"]
    assert "72 小时" in zh[0].text and "3 剂" in zh[1].text
    en = DEFAULT_SETTINGS.recovery("s", ["nat_expired"], SitePolicy(nat_window_hours=24.5), "en")
    assert "24.5 hours" in en[0].text
    # every built-in text formats under any policy
    for lang, texts in DEFAULTS.items():
        for reason in texts:
            (got,) = DEFAULT_SETTINGS.recovery("s", [reason], policy, lang)
            assert "{" not in got.text, (lang, reason)


CONFIG = {
    "lookup": {
        "max_per_window": 5,
        "window_s": 30,
        "nat_results": 3,
        "recovery": {
            "zh-CN": {"nat_expired": "到 3 号楼检测（{nat_window_hours} 小时有效）。"},
            "en": {"travel_flag": "Fleet travel text."},
        },
        "sites": {
            "east-gate": {
                "recovery": {
                    "zh-CN": {"nat_expired": "东门：到门岗旁检测点。", "code_blue": "蓝码请登记。"}
                }
            }
        },
    }
}


def test_site_then_fleet_then_built_in() -> None:
    settings = load_lookup(CONFIG, "siheyi.toml")
    assert (settings.max_per_window, settings.window_s, settings.nat_results) == (5, 30.0, 3)
    policy = SitePolicy(nat_window_hours=48)
    reasons = ["nat_expired", "travel_flag", "code_blue", "code_weird"]
    east = {r.reason: r.text for r in settings.recovery("east-gate", reasons, policy)}
    west = {r.reason: r.text for r in settings.recovery("west-gate", reasons, policy)}
    assert east["nat_expired"] == "东门：到门岗旁检测点。"
    assert west["nat_expired"] == "到 3 号楼检测（48 小时有效）。"
    assert east["travel_flag"] == west["travel_flag"] == DEFAULTS["zh-CN"]["travel_flag"]
    assert east["code_blue"] == "蓝码请登记。"  # a site's own colour reason
    assert west["code_blue"] == east["code_weird"] == FALLBACK["zh-CN"]
    en = {r.reason: r.text for r in settings.recovery("east-gate", reasons, policy, "en")}
    assert en["travel_flag"] == "Fleet travel text."
    assert en["nat_expired"] == DEFAULTS["en"]["nat_expired"].format(nat_window_hours=48)
    assert en["code_blue"] == "蓝码请登记。"  # only written in zh-CN: better than nothing
    assert en["code_weird"] == FALLBACK["en"]


def test_colour_reason_of_a_site_policy_gets_its_text() -> None:
    blue = SitePolicy(colours=MappingProxyType({"blue": ColourRule(False, "code_blue")}))
    code = SourceResult.ok(HealthCode("blue", "", NOW))
    nat = SourceResult.ok(NatResult("negative", NOW, "lab"))
    travel = SourceResult.ok(Travel(False, "", NOW))
    decision = decide(Checks(code, nat, SourceResult.missing(), travel), NOW, blue)
    assert decision.reasons == ("code_blue",)
    settings = load_lookup(CONFIG)
    (text,) = settings.recovery("east-gate", decision.reasons, blue)
    assert text.text == "蓝码请登记。"


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        ({"max_per_window": 0}, "[lookup] max_per_window"),
        ({"windows": 3}, "[lookup] windows"),
        ({"recovery": {"fr": {"nat_expired": "x"}}}, "[lookup.recovery] fr"),
        ({"recovery": {"en": {"Nat Expired": "x"}}}, "[lookup.recovery] en"),
        ({"recovery": {"en": {"nat_expired": " "}}}, "[lookup.recovery] en.nat_expired"),
        ({"recovery": {"en": {"nat_expired": "{hours}"}}}, "[lookup.recovery] en.nat_expired"),
        ({"recovery": {"en": {"nat_expired": "a { b"}}}, "[lookup.recovery] en.nat_expired"),
        (
            {"sites": {"east": {"recovery": {"zh-CN": {"travel_flag": "{0}"}}}}},
            "[lookup.sites.east.recovery] zh-CN.travel_flag",
        ),
    ],
)
def test_bad_lookup_config_names_the_key(lookup: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_lookup({"lookup": lookup}, "siheyi.toml")
    assert str(caught.value).startswith("siheyi.toml: "), caught.value
    assert message in str(caught.value), caught.value


def test_toml_round_trip_and_doubled_braces() -> None:
    raw = b'[lookup.recovery.en]\nnat_expired = "{{sic}} within {nat_window_hours} h"\n'
    doc = configschema.parse_toml(raw, "siheyi.toml", ConfigError)
    (text,) = load_lookup(doc).recovery("s", ["nat_expired"], SitePolicy(), "en")
    assert text.text == "{sic} within 48 h"
    assert load_lookup({}) == DEFAULT_SETTINGS
