"""Demo population: valid, deterministic, realistic, and its outcome picks hold over HTTP."""

from __future__ import annotations

import argparse
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.idnumbers import checksum_ok
from server import cli
from server.app import create_app
from server.config import ServerConfig
from server.storage.db import connect
from server.verify.demodata import (
    generate_people,
    load_demo_data,
    people_by_outcome,
    pick_demo_people,
)

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def test_deterministic_and_valid() -> None:
    rows = generate_people(300, 7, NOW)
    assert rows == generate_people(300, 7, NOW)
    assert rows != generate_people(300, 8, NOW)
    numbers = {r["id_number"] for r in rows["travel"]}
    assert len(numbers) == 300
    assert all(checksum_ok(n) for n in numbers)
    assert all(1940 <= int(n[6:10]) <= 2015 for n in numbers)
    assert {n[:6] for n in numbers} >= {"110101", "310104", "440305", "330106"}


def test_mix() -> None:
    rows = generate_people(2000, 1, NOW)
    colours = Counter(r["colour"] for r in rows["health_code"])
    assert 0.74 < colours["green"] / 2000 < 0.86
    assert 0.08 < colours["yellow"] / 2000 < 0.16
    assert 0.02 < colours["red"] / 2000 < 0.10
    assert 0.01 < (2000 - len(rows["health_code"])) / 2000 < 0.06
    flagged = sum(r["flagged"] == "1" for r in rows["travel"])
    assert 0.02 < flagged / 2000 < 0.08
    doses = Counter(Counter(r["id_number"] for r in rows["vaccination"]).values())
    assert set(doses) == {1, 2, 3}
    groups = people_by_outcome(rows, NOW)
    assert len(groups["pass"]) > 1000
    assert len(groups["nat_expired"]) > 50
    assert len(groups["check"]) > 300
    assert not any(checksum_ok(n) for n in groups["invalid_credential"])


def test_pick_demo_people() -> None:
    rows = generate_people(200, 3, NOW)
    picked = pick_demo_people(rows, NOW, {"pass": 3, "check": 2, "nat_expired": 1})
    assert [o for o, _ in picked] == ["pass"] * 3 + ["check"] * 2 + ["nat_expired"]
    with pytest.raises(ValueError, match="only"):
        pick_demo_people(rows, NOW, {"pass": 10_000})


async def test_loaded_demo_people_get_their_outcome(
    aiohttp_client: Any, db_path: Path, auth: dict[str, str]
) -> None:
    reports = load_demo_data(db_path, 150, 11, now=NOW)
    assert all(r.ok for r in reports.values())
    client: TestClient = await aiohttp_client(
        create_app(ServerConfig.default(database=db_path), clock=lambda: NOW)
    )
    groups = people_by_outcome(generate_people(150, 11, NOW), NOW)
    for outcome, numbers in groups.items():
        for number in numbers[:5]:
            resp = await client.post(
                "/v1/verify",
                json={
                    "tap_id": f"demo-{uuid.uuid4().hex}",
                    "credential": {"kind": "id_card", "id_number": number},
                },
                headers=auth,
            )
            assert (await resp.json())["outcome"] == outcome, number


def test_cli_init_demo_data(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="kiosk")
    cli.register(parser.add_subparsers(dest="command", required=True))
    argv = ["server", "init-demo-data", "--database", str(db_path), "--people", "40", "--seed", "5"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert "40 people" in capsys.readouterr().out
    args = parser.parse_args(argv)
    assert args.func(args) == 0  # idempotent
    with connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM travel").fetchone()[0] == 40
