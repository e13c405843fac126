"""POST /v1/verify end to end: real app, real SQLite, data imported from CSV."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.checks import SourceResult
from provisioning.registry import DeviceBundle, add_device
from server.app import create_app
from server.config import ServerConfig, SitePolicy
from server.storage.db import Database
from server.verify.sources import SourceAdapter, local_sources
from siheyi.cli import local_fleet

from .conftest import People, bearer


async def verify(
    client: TestClient,
    auth: dict[str, str],
    id_number: str,
    kind: str = "id_card",
    tap_id: str | None = None,
) -> dict[str, Any]:
    tap_id = tap_id or f"k1-{uuid.uuid4().hex[:12]}"  # a tap id is never reused (replay)
    resp = await client.post(
        "/v1/verify",
        json={"tap_id": tap_id, "credential": {"kind": kind, "id_number": id_number}},
        headers=auth,
    )
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_pass_document(client: TestClient, auth: dict[str, str], people: People) -> None:
    body = await verify(client, auth, people.passing, tap_id="k1-000001-ab")
    assert body["tap_id"] == "k1-000001-ab"
    assert body["outcome"] == "pass"
    assert body["prompt"] == "绿码通行"
    assert body["masked_id"] == people.passing[:4] + "*" * 10 + people.passing[-4:]
    assert people.passing not in str(body)
    assert body["site"] == "site-a"
    assert body["reasons"] == []
    checks = body["checks"]
    assert set(checks) == {"health_code", "nat", "vaccination", "travel"}
    assert checks["health_code"]["status"] == "ok"
    assert checks["health_code"]["colour"] == "green"
    assert checks["nat"]["result"] == "negative"
    assert 9.9 < checks["nat"]["age_hours"] < 10.5  # the latest of two results
    assert checks["nat"]["window_hours"] == 48
    assert checks["vaccination"] == {
        "status": "ok",
        "doses": 3,
        "last_dose_at": "2021-03-10",
        "min_doses": 0,
    }
    assert checks["travel"] == {"status": "ok", "flagged": False, "area": ""}
    assert body["server_time"].endswith("+00:00")


@pytest.mark.parametrize(
    ("who", "outcome", "reasons"),
    [
        ("expired", "nat_expired", ["nat_expired"]),
        ("yellow", "check", ["code_not_green"]),
        ("travel", "check", ["travel_flag"]),
        ("positive", "check", ["code_not_green", "nat_positive"]),
        ("no_code", "check", ["code_missing"]),
        ("unknown", "check", ["unknown_person"]),
    ],
)
async def test_outcomes(
    client: TestClient,
    auth: dict[str, str],
    people: People,
    who: str,
    outcome: str,
    reasons: list[str],
) -> None:
    body = await verify(client, auth, getattr(people, who))
    assert (body["outcome"], body["reasons"]) == (outcome, reasons)


async def test_unknown_person_checks_are_missing(
    client: TestClient, auth: dict[str, str], people: People
) -> None:
    body = await verify(client, auth, people.unknown)
    assert {c["status"] for c in body["checks"].values()} == {"missing"}
    assert body["prompt"] == "非绿码请核查"


async def test_ss_card_and_lowercase_x(
    client: TestClient, auth: dict[str, str], people: People
) -> None:
    body = await verify(client, auth, people.passing, kind="ss_card")
    assert body["outcome"] == "pass"
    body = await verify(client, auth, "11010519491231002x")
    assert body["outcome"] == "check"  # valid number, unknown person
    assert body["reasons"] == ["unknown_person"]


@pytest.mark.parametrize("number", ["110101199003074511", "1101011990030745", "not a number"])
async def test_invalid_credential(
    client: TestClient, auth: dict[str, str], people: People, number: str
) -> None:
    body = await verify(client, auth, number)
    assert body["outcome"] == "invalid_credential"
    assert body["reasons"] == ["bad_checksum"]
    assert body["prompt"] == "证件无效，请重新刷卡"
    assert body["checks"] == {}


async def test_site_policy_from_device_site(
    aiohttp_client: Any, config: ServerConfig, db_path: Path, people: People
) -> None:
    strict = SitePolicy(
        nat_window_hours=5, min_doses=4, prompts={**config.policy.prompts, "check": "人工核查"}
    )
    app = create_app(replace(config, sites={"east": strict}))
    client: TestClient = await aiohttp_client(app)
    east = add_device(local_fleet(None, db_path), "SN-EAST", "east")
    body = await verify(client, bearer(db_path, east), people.passing)
    assert body["site"] == "east"
    assert body["outcome"] == "check"
    assert body["reasons"] == ["nat_expired", "doses_below_minimum"]
    assert body["prompt"] == "人工核查"
    assert body["checks"]["nat"]["window_hours"] == 5
    assert body["checks"]["vaccination"]["min_doses"] == 4


class SlowSource:
    """Answers far later than the verifier's timeout."""

    name = "travel"

    def __init__(self) -> None:
        self.cancelled = False

    async def lookup(self, id_number: str) -> SourceResult[Any]:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("not reached")


class ExplodingSource:
    """Raises instead of answering."""

    name = "health_code"

    async def lookup(self, id_number: str) -> SourceResult[Any]:
        raise RuntimeError("upstream said no")


def replacing(*fakes: Any) -> Any:
    def factory(db: Database) -> Sequence[SourceAdapter]:
        names = {f.name for f in fakes}
        return [s for s in local_sources(db) if s.name not in names] + list(fakes)

    return factory


async def test_slow_source_times_out_fast(
    aiohttp_client: Any,
    config: ServerConfig,
    device: DeviceBundle,
    auth: dict[str, str],
    people: People,
) -> None:
    slow = SlowSource()
    app = create_app(replace(config, source_timeout_s=0.2), source_factory=replacing(slow))
    client: TestClient = await aiohttp_client(app)
    started = time.monotonic()
    body = await verify(client, auth, people.passing)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert body["outcome"] == "check"
    assert body["reasons"] == ["source_error:travel"]
    assert body["checks"]["travel"] == {"status": "error", "error": "timeout"}
    assert body["checks"]["health_code"]["status"] == "ok"
    assert slow.cancelled


async def test_exploding_source_is_check_not_500(
    aiohttp_client: Any,
    config: ServerConfig,
    device: DeviceBundle,
    auth: dict[str, str],
    people: People,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(config, source_factory=replacing(ExplodingSource()))
    client: TestClient = await aiohttp_client(app)
    for _ in range(3):
        body = await verify(client, auth, people.passing)
        assert body["outcome"] == "check"
        assert body["reasons"] == ["source_error:health_code"]
        assert body["checks"]["health_code"] == {"status": "error", "error": "failed"}
    failing = [r for r in caplog.records if "source health_code failing" in r.getMessage()]
    assert len(failing) == 1  # logged once, not per request
    assert people.passing not in caplog.text


def test_answers_carry_a_non_default_colour_table_only() -> None:
    """The kiosk caches the table with the answer (offline decisions judge colours alike);
    the default table is not sent, so most answers stay as they were."""
    from datetime import UTC, datetime

    from core.checks import SourceResult
    from core.policy import DEFAULT_COLOURS, ColourRule, SitePolicy
    from server.verify.service import check_document

    now = datetime(2026, 11, 23, tzinfo=UTC)
    missing: SourceResult[object] = SourceResult.missing()
    assert "colours" not in check_document("health_code", missing, now, SitePolicy())
    blue = SitePolicy(colours={**DEFAULT_COLOURS, "blue": ColourRule(passes=True)})
    doc = check_document("health_code", missing, now, blue)
    assert doc["colours"]["blue"]["passes"] is True  # sent whatever the person's checks say
