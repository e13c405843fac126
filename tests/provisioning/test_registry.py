"""Device registry and bundles."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from core.bundle import bundle_text
from provisioning.errors import DeviceNotFound, DeviceRevoked, InvalidField, SerialExists
from provisioning.registry import (
    add_device,
    add_from_csv,
    get_device,
    list_devices,
    revoke_device,
    write_bundle,
)
from server.storage.db import connect
from tests.pgserver import dump_text
from tests.provisioning.fleets import local


@pytest.fixture
def db(any_database: Path | str) -> Path | str:
    return any_database


def test_add_stores_only_the_public_key(db: Path) -> None:
    bundle = add_device(
        local(db), "SN-1", "site-a", "g1", "north door", server_url="https://s.example/"
    )
    assert bundle.device_id.startswith("k-") and len(bundle.device_id) == 12
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(bundle.private_key))
    assert private.public_key().public_bytes_raw().hex() == bundle.public_key
    assert bundle.private_key not in repr(bundle)
    assert bundle.server_url == "https://s.example"
    assert len(bytes.fromhex(bundle.site_key)) == 32
    with connect(db) as conn:
        row = conn.execute("SELECT * FROM devices").fetchone()
        dump = dump_text(conn)
    assert bundle.public_key in row
    assert bundle.private_key not in dump
    record = get_device(local(db), "SN-1")
    assert (record.site, record.gate, record.location, record.status) == (
        "site-a",
        "g1",
        "north door",
        "active",
    )


def test_pseudonym_key_is_per_site(db: Path) -> None:
    a = add_device(local(db), "SN-1", "site-a")
    a2 = add_device(local(db), "SN-3", "site-a")
    b = add_device(local(db), "SN-2", "site-b")
    # a bundle carries its own site's key only: kiosks of a site agree, sites differ
    assert a.site_key == a2.site_key
    assert a.site_key != b.site_key
    assert len(bytes.fromhex(b.site_key)) == 32
    assert a.device_id != b.device_id
    with connect(db) as conn:
        stored = dict(conn.execute("SELECT site, key_hex FROM site_keys").fetchall())
    assert stored == {"site-a": a.site_key, "site-b": b.site_key}


def test_csv_bundles_carry_their_own_site_key(db: Path, tmp_path: Path) -> None:
    first = add_device(local(db), "SN-0", "site-a")
    csv_path = tmp_path / "devices.csv"
    csv_path.write_text("serial,site,gate\nSN-1,site-a,g1\nSN-2,site-b,g1\nSN-3,site-b,g2\n")
    result = add_from_csv(local(db), csv_path, bundle_dir=tmp_path / "out", create_sites=True)
    keys = {p.stem: json.loads(p.read_text())["fleet_key"] for p in sorted(result.bundles)}
    assert keys["SN-1"] == first.site_key
    assert keys["SN-2"] == keys["SN-3"] != first.site_key


def test_serial_exists_and_rotate(db: Path) -> None:
    first = add_device(local(db), "SN-1", "site-a")
    with pytest.raises(SerialExists, match="serial exists"):
        add_device(local(db), "SN-1", "site-a")
    rotated = add_device(local(db), "SN-1", "site-b", "g2", rekey=True)
    assert rotated.device_id == first.device_id
    assert rotated.private_key != first.private_key
    assert rotated.public_key != first.public_key
    assert get_device(local(db), first.device_id).site == "site-b"
    assert len(list_devices(local(db))) == 1


def test_revoke(db: Path) -> None:
    bundle = add_device(local(db), "SN-1", "site-a")
    assert revoke_device(local(db), "SN-1").status == "revoked"
    assert revoke_device(local(db), bundle.device_id).status == "revoked"  # by id, idempotent
    assert get_device(local(db), "SN-1").status == "revoked"
    with pytest.raises(DeviceRevoked):
        add_device(local(db), "SN-1", "site-a", rotate_secret=True)
    with pytest.raises(DeviceNotFound):
        revoke_device(local(db), "SN-404")


@pytest.mark.parametrize(
    ("serial", "site", "url"),
    [
        ("", "s", "http://x"),
        ("bad serial", "s", "http://x"),
        ("SN", " ", "http://x"),
        ("SN", "s", "ftp://x"),
    ],
)
def test_invalid_fields(db: Path, serial: str, site: str, url: str) -> None:
    with pytest.raises(InvalidField):
        add_device(local(db), serial, site, server_url=url)


def test_bundle_file(db: Path, tmp_path: Path) -> None:
    bundle = add_device(local(db), "SN-1", "site-a", "g1", server_url="http://10.0.0.1:8080")
    path = tmp_path / "bundle.json"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o644)
    write_bundle(bundle, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data) == {
        "device_id",
        "serial",
        "site",
        "gate",
        "server_url",
        "site_key",
        "fleet_key",  # the same key, for kiosks of releases before the rename
        "server_key",
        "private_key",
        "public_key",
        "tls_ca",
    }
    assert data["server_key"] == bundle.server_key
    assert data["private_key"] == bundle.private_key
    assert data["site_key"] == data["fleet_key"] == bundle.site_key
    assert data["server_url"] == "http://10.0.0.1:8080"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_bundle_carries_the_servers_snapshot_public_key(db: Path) -> None:
    a = add_device(local(db), "SN-1", "site-a")
    b = add_device(local(db), "SN-2", "site-b")
    assert a.server_key == b.server_key  # one server key for the fleet
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(a.server_key))
    with connect(db) as conn:
        stored = conn.execute("SELECT private_key FROM server_keys").fetchall()
    assert len(stored) == 1
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(stored[0][0]))
    public.verify(private.sign(b"snapshot"), b"snapshot")  # the pair matches
    assert stored[0][0] not in bundle_text(a)  # the private half never leaves
    rotated = add_device(local(db), "SN-1", "site-a", rotate_secret=True)
    assert rotated.server_key == a.server_key
