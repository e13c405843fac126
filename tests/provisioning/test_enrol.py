"""On-kiosk enrolment with single-use codes: the happy path and every refusal."""

from __future__ import annotations

import stat
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

import server.fleet.sessions
from device.config import load_bundle
from device.errors import EnrolError
from device.link.client import ServerClient
from device.link.enrol import enrol
from device.link.identity import DeviceIdentity
from provisioning import registry
from provisioning.errors import DeviceRevoked
from server.app import create_app
from server.config import ServerConfig
from server.fleet.registry import DeviceRow, upsert_devices
from server.fleet.sessions import utc_now
from server.storage.db import connect, transaction
from tests.provisioning.fleets import local


@pytest.fixture
def db(any_database: Path | str) -> Path | str:
    path = any_database
    with connect(path) as conn, transaction(conn):
        report = upsert_devices(
            conn,
            [(1, DeviceRow("SN-A", "site-a", "g1")), (2, DeviceRow("SN-B", "site-a"))],
            create_sites=True,
        )
    assert report.count("created") == 2
    return path


@pytest.fixture
async def url(db: Path) -> AsyncIterator[str]:
    test_server = TestServer(create_app(ServerConfig.default(database=db)))
    await test_server.start_server()
    try:
        yield str(test_server.make_url("")).rstrip("/")
    finally:
        await test_server.close()


async def test_enrol_happy_path(db: Path, url: str, tmp_path: Path) -> None:
    code, _ = registry.issue_enrol_code(local(db), "SN-A")
    path = await enrol(url, "SN-A", code.lower(), tmp_path / "kiosk")  # typed sloppily: fine
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    bundle = load_bundle(path)
    record = registry.get_device(local(db), "SN-A")
    assert (bundle.device_id, bundle.site, bundle.gate) == (record.device_id, "site-a", "g1")
    assert record.enrolled
    identity = DeviceIdentity.from_bundle(bundle.device_id, bundle.private_key, path)
    async with ServerClient(url, identity) as client:
        answer = await client.verify(f"t-{uuid.uuid4().hex}", "id_card", "11010519491231002X", 5)
    assert answer["site"] == "site-a"


async def test_reused_code_is_refused(db: Path, url: str, tmp_path: Path) -> None:
    code, _ = registry.issue_enrol_code(local(db), "SN-A")
    await enrol(url, "SN-A", code, tmp_path / "one")
    with pytest.raises(EnrolError) as err:
        await enrol(url, "SN-A", code, tmp_path / "two")
    assert err.value.error == "replay"
    assert not (tmp_path / "two" / "bundle.json").exists()


async def test_expired_code_is_refused(
    db: Path, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _ = registry.issue_enrol_code(local(db), "SN-A")  # default lifetime 15 min
    monkeypatch.setattr(server.fleet.sessions, "utc_now", lambda: utc_now() + timedelta(minutes=16))
    with pytest.raises(EnrolError) as err:
        await enrol(url, "SN-A", code, tmp_path / "kiosk")
    assert err.value.error == "code_expired"
    assert not registry.get_device(local(db), "SN-A").enrolled


async def test_wrong_serial_is_refused_and_the_code_survives(
    db: Path, url: str, tmp_path: Path
) -> None:
    code, _ = registry.issue_enrol_code(local(db), "SN-A")
    with pytest.raises(EnrolError) as err:
        await enrol(url, "SN-B", code, tmp_path / "b")
    assert err.value.error == "wrong_serial"
    assert not registry.get_device(local(db), "SN-B").enrolled
    await enrol(url, "SN-A", code, tmp_path / "a")  # the installer's typo cost nothing


async def test_unknown_code_and_superseded_code(db: Path, url: str, tmp_path: Path) -> None:
    with pytest.raises(EnrolError) as err:
        await enrol(url, "SN-A", "ABCDE-FGHJK", tmp_path / "x")
    assert err.value.error == "bad_code"
    first, _ = registry.issue_enrol_code(local(db), "SN-A")
    second, _ = registry.issue_enrol_code(local(db), "SN-A")
    with pytest.raises(EnrolError) as err:
        await enrol(url, "SN-A", first, tmp_path / "x")
    assert err.value.error == "replay"  # only the newest code of a serial is valid
    await enrol(url, "SN-A", second, tmp_path / "x")


async def test_revoked_device_cannot_enrol(db: Path, url: str, tmp_path: Path) -> None:
    code, _ = registry.issue_enrol_code(local(db), "SN-A")
    registry.revoke_device(local(db), "SN-A")
    with pytest.raises(EnrolError) as err:
        await enrol(url, "SN-A", code, tmp_path / "kiosk")
    assert err.value.error == "revoked"
    with pytest.raises(DeviceRevoked):
        registry.issue_enrol_code(local(db), "SN-A")


async def test_re_enrolment_replaces_a_lost_key(db: Path, url: str, tmp_path: Path) -> None:
    code, _ = registry.issue_enrol_code(local(db), "SN-A")
    first = load_bundle(await enrol(url, "SN-A", code, tmp_path / "old"))
    code, _ = registry.issue_enrol_code(local(db), "SN-A")  # the SD card died
    second = load_bundle(await enrol(url, "SN-A", code, tmp_path / "new"))
    assert first.device_id == second.device_id and first.public_key != second.public_key
    old = DeviceIdentity.from_bundle(first.device_id, first.private_key, None)
    async with ServerClient(url, old) as client:
        with pytest.raises(Exception, match="bad_signature"):
            await client.verify("t-1", "id_card", "11010519491231002X", 5)


def test_enrol_code_cli(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.provisioning.test_cli import run

    assert run(["provision", "enrol-code", "SN-A", "--database", str(db), "--ttl", "5"]) == 0
    assert "single use" in capsys.readouterr().out
    assert run(["provision", "enrol-code", "SN-404", "--database", str(db)]) == 1
