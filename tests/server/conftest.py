"""Fixtures: a real SQLite file, a provisioned device and the real app on a test client."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from core.idnumbers import make_id_number
from provisioning.registry import DeviceBundle, add_device
from server.app import create_app
from server.config import ServerConfig
from server.fleet.sessions import mint_token
from server.storage.db import connect
from server.verify.importer import import_csv
from siheyi.cli import local_fleet


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Write a UTF-8 CSV file."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def ts(value: datetime) -> str:
    """ISO 8601 with offset, as the importer wants."""
    return value.isoformat(timespec="seconds")


@dataclass(frozen=True)
class People:
    """ID numbers of the seeded people, one per situation."""

    passing: str
    expired: str
    yellow: str
    travel: str
    positive: str
    no_code: str
    unknown: str


@pytest.fixture
def db_path(any_database: Path | str) -> Path | str:
    """The server's database: each test using it runs on SQLite and on PostgreSQL."""
    return any_database


@pytest.fixture
def config(db_path: Path) -> ServerConfig:
    return ServerConfig.default(database=db_path)


@pytest.fixture
def device(db_path: Path) -> DeviceBundle:
    return add_device(
        local_fleet(None, db_path), "SN-0001", "site-a", "gate-1", server_url="http://test"
    )


def bearer(db_path: Path, device: DeviceBundle) -> dict[str, str]:
    """A session token for ``device``, minted from the database (what POST /v1/session gives)."""
    with connect(db_path) as conn:
        return {"Authorization": f"Bearer {mint_token(conn, device.device_id)}"}


@pytest.fixture
def auth(db_path: Path, device: DeviceBundle) -> dict[str, str]:
    return bearer(db_path, device)


@pytest.fixture
def people(db_path: Path, tmp_path: Path) -> People:
    """Seed the four sources through the real importer, relative to the real clock."""
    now = datetime.now(UTC)
    p = People(
        passing=make_id_number("110101", "19900307", "451"),
        expired=make_id_number("310104", "19851111", "022"),
        yellow=make_id_number("440305", "20010203", "113"),
        travel=make_id_number("330106", "19770520", "334"),
        positive=make_id_number("110105", "19620101", "005"),
        no_code=make_id_number("320102", "19990909", "999"),
        unknown=make_id_number("510107", "19700101", "123"),
    )
    everyone = [p.passing, p.expired, p.yellow, p.travel, p.positive, p.no_code]
    colours = {p.yellow: "yellow", p.positive: "red"}
    write_csv(
        tmp_path / "hc.csv",
        ["id_number", "colour", "reason", "updated_at"],
        [
            (n, colours.get(n, "green"), "", ts(now - timedelta(hours=1)))
            for n in everyone
            if n != p.no_code
        ],
    )
    nat_rows: list[tuple[object, ...]] = []
    for n in everyone:
        age = 60 if n == p.expired else 10
        result = "positive" if n == p.positive else "negative"
        nat_rows.append((n, ts(now - timedelta(hours=age)), result, "lab"))
        nat_rows.append((n, ts(now - timedelta(hours=200)), "negative", "old lab"))
    write_csv(tmp_path / "nat.csv", ["id_number", "sampled_at", "result", "lab"], nat_rows)
    write_csv(
        tmp_path / "vac.csv",
        ["id_number", "dose", "vaccinated_at", "vaccine"],
        [(p.passing, d, f"2021-0{d}-10", "科兴中维") for d in (1, 2, 3)],
    )
    write_csv(
        tmp_path / "travel.csv",
        ["id_number", "flagged", "area", "updated_at"],
        [
            (
                n,
                "yes" if n == p.travel else "no",
                "上海市浦东新区" if n == p.travel else "",
                ts(now),
            )
            for n in everyone
        ],
    )
    for kind, name in (
        ("health_code", "hc.csv"),
        ("nat", "nat.csv"),
        ("vaccination", "vac.csv"),
        ("travel", "travel.csv"),
    ):
        report = import_csv(db_path, kind, tmp_path / name)
        assert report.ok, report.errors
    return p


@pytest.fixture
async def client(aiohttp_client: object, config: ServerConfig, device: DeviceBundle) -> TestClient:
    return await aiohttp_client(create_app(config))  # type: ignore[operator,no-any-return]
