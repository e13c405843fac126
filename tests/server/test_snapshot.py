"""GET /v1/snapshot: the signed, pseudonymised list of a site's people for the kiosk cache."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from core.checks import HealthCode, Travel
from core.idnumbers import pseudonym as device_pseudonym
from device.deciding.snapshot import verify_snapshot
from device.errors import SnapshotError
from provisioning.registry import DeviceBundle, add_device
from server.app import create_app
from server.appkeys import SIGNING_KEY, SNAPSHOTS
from server.config import ServerConfig
from server.offline.snapshot import canonical_json, canonical_snapshot, overlay
from server.storage.db import connect
from server.verify.importer import import_csv
from server.verify.resilience import ResilientSource
from siheyi.cli import local_fleet

from .conftest import People, bearer, write_csv


def canonical(value: Any) -> bytes:
    """Canonical JSON exactly as docs/api.md spells it (independent of server code)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def verify_signature(body: dict[str, Any], server_key_hex: str) -> None:
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(server_key_hex))
    public.verify(bytes.fromhex(body["signature"]), canonical(body["snapshot"]))


@pytest.fixture
def site_people(db_path: Path, tmp_path: Path, people: People) -> list[str]:
    """site-a expects passing, expired, yellow and unknown (lower-case x kept as given)."""
    rows = [
        ("site-a", people.passing),
        ("site-a", people.expired),
        ("site-a", people.yellow),
        ("site-a", people.unknown),
        ("site-b", people.travel),
    ]
    report = import_csv(
        db_path,
        "site_people",
        write_csv(tmp_path / "sp.csv", ["site", "id_number"], rows),
        create_sites=True,
    )
    assert report.ok and report.imported == 5, report.errors
    return [people.passing, people.expired, people.yellow, people.unknown]


async def get_snapshot(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    resp = await client.get("/v1/snapshot", headers=auth)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    return body


async def test_signed_snapshot_of_the_devices_site(
    client: TestClient,
    auth: dict[str, str],
    device: DeviceBundle,
    people: People,
    site_people: list[str],
) -> None:
    body = await get_snapshot(client, auth)
    assert set(body) == {"snapshot", "signature", "key_id"}
    verify_signature(body, device.server_key)  # the key the bundle carries
    public = bytes.fromhex(device.server_key)
    assert len(public) == 32
    assert body["key_id"] == hashlib.sha256(public).digest()[:8].hex()

    snap = body["snapshot"]
    assert snap["site"] == "site-a"
    assert datetime.fromisoformat(snap["generated_at"]).tzinfo is not None
    assert snap["policy"] == {"nat_window_hours": 48, "min_doses": 0}
    assert (snap["count"], snap["truncated"]) == (4, False)

    key = bytes.fromhex(device.site_key)
    expected = {device_pseudonym(key, n): n for n in site_people}
    assert set(snap["people"]) == set(expected)  # only site-a's people
    assert device_pseudonym(key, people.travel) not in snap["people"]
    passing = snap["people"][device_pseudonym(key, people.passing)]
    assert passing["colour"] == "green"
    assert passing["nat_result"] == "negative"
    sampled = datetime.fromisoformat(passing["nat_sampled_at"])
    assert 9.9 < (datetime.now(UTC) - sampled).total_seconds() / 3600 < 10.5  # the latest
    assert (passing["doses"], passing["last_dose_at"]) == (3, "2021-03-10")
    assert (passing["travel_flagged"], passing["area"]) == (False, "")
    assert snap["people"][device_pseudonym(key, people.yellow)]["colour"] == "yellow"
    unknown = snap["people"][device_pseudonym(key, people.unknown)]
    assert unknown == {
        "colour": None,
        "nat_result": None,
        "nat_sampled_at": None,
        "doses": 0,
        "last_dose_at": None,
        "travel_flagged": None,
        "area": None,
    }
    text = json.dumps(body)
    for number in [*site_people, people.travel]:
        assert number not in text  # pseudonyms only


async def test_tampering_breaks_the_signature(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, site_people: list[str]
) -> None:
    body = await get_snapshot(client, auth)
    verify_signature(body, device.server_key)
    for change in (
        lambda s: [p.update(colour="green", nat_result="negative") for p in s["people"].values()],
        lambda s: s.update(site="site-b"),
        lambda s: s["policy"].update(nat_window_hours=480),
        lambda s: s.update(generated_at="2099-01-01T00:00:00+00:00"),
        lambda s: s["people"].pop(next(iter(s["people"]))),
    ):
        forged = copy.deepcopy(body)
        change(forged["snapshot"])
        assert forged != body
        with pytest.raises(InvalidSignature):
            verify_signature(forged, device.server_key)
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    with pytest.raises(InvalidSignature):
        verify_signature(body, other)


async def test_auth_required(client: TestClient, auth: dict[str, str], db_path: Path) -> None:
    resp = await client.get("/v1/snapshot")
    assert resp.status == 401
    resp = await client.get("/v1/snapshot", headers={"Authorization": "Bearer k-x.nope"})
    assert resp.status == 401
    resp = await client.post("/v1/snapshot", headers=auth)
    assert resp.status == 405


async def test_other_site_and_empty_site(
    aiohttp_client: Any,
    config: ServerConfig,
    db_path: Path,
    people: People,
    site_people: list[str],
) -> None:
    client: TestClient = await aiohttp_client(create_app(config))
    b = add_device(local_fleet(None, db_path), "SN-B", "site-b")
    body = await get_snapshot(client, bearer(db_path, b))
    verify_signature(body, b.server_key)
    key = bytes.fromhex(b.site_key)
    assert list(body["snapshot"]["people"]) == [device_pseudonym(key, people.travel)]
    assert body["snapshot"]["people"][device_pseudonym(key, people.travel)]["travel_flagged"]
    c = add_device(local_fleet(None, db_path), "SN-C", "site-c")
    body = await get_snapshot(client, bearer(db_path, c))
    assert body["snapshot"]["people"] == {} and body["snapshot"]["count"] == 0
    verify_signature(body, c.server_key)


async def test_each_site_pseudonymised_with_its_own_key(
    aiohttp_client: Any,
    config: ServerConfig,
    db_path: Path,
    people: People,
    tmp_path: Path,
) -> None:
    """The same person expected at two sites has unrelated pseudonyms in their snapshots; a
    site-a bundle derives site-a's exactly and none of site-b's."""
    rows = [("site-a", people.passing), ("site-b", people.passing), ("site-b", people.travel)]
    csv_path = write_csv(tmp_path / "sp.csv", ["site", "id_number"], rows)
    assert import_csv(db_path, "site_people", csv_path, create_sites=True).ok
    client: TestClient = await aiohttp_client(create_app(config))
    a = add_device(local_fleet(None, db_path), "SN-A", "site-a")
    b = add_device(local_fleet(None, db_path), "SN-B", "site-b")
    key_a, key_b = bytes.fromhex(a.site_key), bytes.fromhex(b.site_key)
    assert key_a != key_b
    body_b = await get_snapshot(client, bearer(db_path, b))
    snap_a = (await get_snapshot(client, bearer(db_path, a)))["snapshot"]["people"]
    snap_b = body_b["snapshot"]["people"]
    # a site-a kiosk refuses site-b's snapshot outright (signed, but not for its site)
    with pytest.raises(SnapshotError, match="not 'site-a'"):
        verify_snapshot(body_b, a.server_key, a.site, now=time.time(), max_age_s=3600)
    # server and kiosk agree on each site's pseudonyms
    assert set(snap_a) == {device_pseudonym(key_a, people.passing)}
    assert set(snap_b) == {device_pseudonym(key_b, n) for n in (people.passing, people.travel)}
    # one person, two sites, two unlinkable pseudonyms
    assert not set(snap_a) & set(snap_b)
    # site-a's key derives none of site-b's pseudonyms (nor the other way round)
    assert not {device_pseudonym(key_a, n) for n in (people.passing, people.travel)} & set(snap_b)
    assert device_pseudonym(key_b, people.passing) not in snap_a


async def test_bounded_and_cached(
    aiohttp_client: Any,
    config: ServerConfig,
    auth: dict[str, str],
    device: DeviceBundle,
    site_people: list[str],
) -> None:
    app = create_app(replace(config, snapshot_max_people=2))
    client: TestClient = await aiohttp_client(app)
    first = await get_snapshot(client, auth)
    assert (first["snapshot"]["count"], first["snapshot"]["truncated"]) == (2, True)
    assert len(first["snapshot"]["people"]) == 2
    verify_signature(first, device.server_key)
    second = await get_snapshot(client, auth)
    assert second == first
    assert app[SNAPSHOTS].builds == 1  # reused within [snapshot] cache_s

    app = create_app(replace(config, snapshot_cache_s=0))
    client = await aiohttp_client(app)
    await get_snapshot(client, auth)
    await get_snapshot(client, auth)
    assert app[SNAPSHOTS].builds == 2


async def test_gzip_when_accepted(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, site_people: list[str]
) -> None:
    resp = await client.get("/v1/snapshot", headers={**auth, "Accept-Encoding": "gzip"})
    assert resp.status == 200
    assert resp.headers["Content-Encoding"] == "gzip"
    verify_signature(await resp.json(), device.server_key)  # decompressed by the client
    resp = await client.get("/v1/snapshot", headers={**auth, "Accept-Encoding": "identity"})
    assert "Content-Encoding" not in resp.headers
    verify_signature(await resp.json(), device.server_key)


async def test_key_is_stable_and_private_half_stays_put(
    aiohttp_client: Any,
    config: ServerConfig,
    db_path: Path,
    auth: dict[str, str],
    device: DeviceBundle,
    site_people: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    first_app = create_app(config)
    first: TestClient = await aiohttp_client(first_app)
    body1 = await get_snapshot(first, auth)
    second: TestClient = await aiohttp_client(create_app(config))
    body2 = await get_snapshot(second, auth)
    assert body1["key_id"] == body2["key_id"]  # generated once, stored in the database
    with connect(db_path) as conn:
        private = conn.execute("SELECT private_key FROM server_keys").fetchone()[0]
    assert private not in caplog.text
    assert private not in repr(first_app[SIGNING_KEY])
    assert first_app[SIGNING_KEY].public_hex == device.server_key


async def test_snapshot_matches_verify_and_privacy_pseudonym_normalisation(
    client: TestClient, auth: dict[str, str], device: DeviceBundle, db_path: Path, tmp_path: Path
) -> None:
    number = "11010519491231002X"
    write_csv(tmp_path / "sp2.csv", ["site", "id_number"], [("site-a", number.lower())])
    assert import_csv(db_path, "site_people", tmp_path / "sp2.csv", create_sites=True).ok
    body = await get_snapshot(client, auth)
    key = bytes.fromhex(device.site_key)
    # the kiosk may read "…x" from a QR code and "…X" from a card: one pseudonym either way
    assert device_pseudonym(key, number.lower()) in body["snapshot"]["people"]
    assert device_pseudonym(key, f" {number} ") in body["snapshot"]["people"]


def test_overlay_uses_last_known_upstream_values() -> None:
    class Never:
        name = "health_code"

        async def lookup(self, id_number: str) -> Any:
            raise AssertionError("overlay must not ask the upstream")

    now = datetime(2026, 11, 23, tzinfo=UTC)
    source = ResilientSource(Never(), timeout_s=0.1)
    source._remember("A", HealthCode("red", "", now))
    travel = ResilientSource(Never(), timeout_s=0.1)
    travel._remember("A", Travel(True, "x区", now))
    people: dict[str, dict[str, Any]] = {"A": {"colour": None}, "B": {"colour": None}}
    overlay(people, source)
    overlay(people, travel)
    assert people["A"] == {"colour": "red", "travel_flagged": True, "area": "x区"}
    assert people["B"] == {"colour": None}


def test_canonical_json_is_the_documented_one() -> None:
    value = {"b": [1, {"z": "é", "a": None}], "a": True}
    assert canonical_json(value) == canonical(value)
    assert canonical_json(value) == '{"a":true,"b":[1,{"a":null,"z":"é"}]}'.encode()


@pytest.mark.parametrize("site", ["site-a", 'x"people":{}', "东门"])
def test_piecewise_canonical_encoding_equals_one_dumps(site: str) -> None:
    header = {
        "site": site,
        "generated_at": "2026-11-23T08:00:00+00:00",
        "policy": {"nat_window_hours": 24.5, "min_doses": 2},
        "count": 3,
        "truncated": False,
    }
    people = {
        "ff" * 32: {"colour": "green", "area": "上海市浦东新区", "doses": 3},
        "00" * 32: {"colour": None, "area": 'a"b\\c', "doses": 0},
        "7a" * 32: {"colour": "red", "area": "", "doses": None},
    }
    whole = canonical(dict(header, people=people))
    assert canonical_snapshot(header, people) == whole
    assert canonical_snapshot(header, {}) == canonical(dict(header, people={}))
