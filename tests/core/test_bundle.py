"""The bundle format both provisioning and the kiosk read (core.bundle)."""

from __future__ import annotations

import json

import pytest

from core.bundle import Bundle, bundle_document, bundle_text, decode_bundle
from core.errors import BundleError

GOOD = {
    "device_id": "k-1",
    "serial": "SN-1",
    "site": "east",
    "server_url": "https://siheyi.example",
    "site_key": "00" * 32,
    "private_key": "11" * 32,
}


def test_round_trip_writes_both_key_names() -> None:
    bundle = decode_bundle(json.dumps(GOOD))
    assert bundle.site_key_bytes == bytes(32)
    doc = json.loads(bundle_text(bundle))
    assert doc["site_key"] == doc["fleet_key"] == "00" * 32
    assert decode_bundle(bundle_text(bundle)) == bundle


def test_old_bundles_with_fleet_key_still_load() -> None:
    old = {k: v for k, v in GOOD.items() if k != "site_key"} | {"fleet_key": "22" * 32}
    assert decode_bundle(json.dumps(old)).site_key == "22" * 32


def test_unknown_keys_are_ignored_for_newer_provisioning_tools() -> None:
    assert decode_bundle(json.dumps({**GOOD, "added_later": 1})).device_id == "k-1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"site_key": "zz"}, "'site_key' must be hex"),
        ({"private_key": "11"}, "'private_key' must be 64 hex digits"),
        ({"serial": 5}, "Expected `str`, got `int`"),
        ({"private_key": None, "secret": "s"}, "enrol the kiosk again"),
    ],
)
def test_bad_bundles_name_the_key(change: dict[str, object], message: str) -> None:
    doc = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(BundleError, match=message):
        decode_bundle(json.dumps(doc))


def test_missing_key_is_named() -> None:
    doc = {k: v for k, v in GOOD.items() if k != "serial"}
    with pytest.raises(BundleError, match="lacks 'serial'"):
        decode_bundle(json.dumps(doc))


def test_private_key_stays_out_of_repr_and_document_order_is_stable() -> None:
    bundle = Bundle(**GOOD)  # type: ignore[arg-type]
    assert GOOD["private_key"] not in repr(bundle)
    assert list(bundle_document(bundle))[:3] == ["device_id", "serial", "site"]
