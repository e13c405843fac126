"""``POST /v1/passes/claim``: a signed pass's nonce is claimed once for the whole fleet,
kept until the pass expires (never longer than a pass can live), then purged."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from provisioning.registry import DeviceBundle, add_device
from server.fleet import pass_claims
from server.fleet.pass_claims import LONGEST_S
from server.storage.db import connect
from siheyi.cli import local_fleet

from .conftest import bearer

NONCE = "3f9a0c12de4b5a67"


def rows(db: Path | str) -> list[tuple[str, str, int, int]]:
    with connect(db) as conn:
        found = conn.execute(
            "SELECT nonce, device_id, claimed_at, expires_at FROM pass_claims ORDER BY nonce"
        ).fetchall()
    return [(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in found]


async def test_the_first_claim_wins_at_any_kiosk(
    client: TestClient, db_path: Path, device: DeviceBundle, auth: dict[str, str]
) -> None:
    other = add_device(
        local_fleet(None, db_path), "SN-0002", "site-a", "gate-2", server_url="http://t"
    )
    exp = int(time.time()) + 300
    first = await client.post(
        "/v1/passes/claim", json={"nonce": NONCE, "expires_at": exp}, headers=auth
    )
    assert first.status == 200
    body = await first.json()
    assert body["nonce"] == NONCE and abs(body["claimed_at"] - time.time()) < 60
    for who in (auth, bearer(db_path, other)):  # the same kiosk again, or another one
        again = await client.post(
            "/v1/passes/claim", json={"nonce": NONCE, "expires_at": exp}, headers=who
        )
        assert again.status == 409 and (await again.json())["error"] == "replay"
    assert [r[:2] for r in rows(db_path)] == [(NONCE, device.device_id)]


@pytest.mark.parametrize(
    "body",
    [
        {"nonce": "3F9A0C12DE4B5A67", "expires_at": 1},
        {"nonce": "3f9a0c12", "expires_at": 1},
        {"nonce": NONCE, "expires_at": "soon"},
        {"nonce": NONCE},
    ],
)
async def test_a_malformed_claim_is_refused_and_claims_nothing(
    client: TestClient, db_path: Path, auth: dict[str, str], body: dict[str, object]
) -> None:
    resp = await client.post("/v1/passes/claim", json=body, headers=auth)
    assert resp.status == 400
    assert rows(db_path) == []


async def test_a_claim_needs_a_device_session(client: TestClient) -> None:
    resp = await client.post("/v1/passes/claim", json={"nonce": NONCE, "expires_at": 1})
    assert resp.status == 401


async def test_a_far_future_expiry_is_kept_no_longer_than_a_pass_can_live(
    client: TestClient, db_path: Path, auth: dict[str, str]
) -> None:
    far = int(time.time()) + 10 * 86400
    resp = await client.post(
        "/v1/passes/claim", json={"nonce": NONCE, "expires_at": far}, headers=auth
    )
    assert resp.status == 200
    ((_, _, claimed_at, expires_at),) = rows(db_path)
    assert expires_at == claimed_at + LONGEST_S


def test_expired_claims_are_purged_and_may_be_claimed_again(db_path: Path) -> None:
    with connect(db_path) as conn:
        assert pass_claims.claim(conn, "a" * 16, "k-1", 1000, 900)
        assert pass_claims.claim(conn, "b" * 16, "k-1", 2000, 900)
        assert not pass_claims.claim(conn, "a" * 16, "k-2", 1000, 1000)  # valid at exp
        assert pass_claims.claim(conn, "a" * 16, "k-2", 1500, 1001)  # expired: a new claim
        assert pass_claims.purge(conn, 1600) == 1
        remaining = conn.execute("SELECT nonce FROM pass_claims").fetchall()
    assert [r[0] for r in remaining] == ["b" * 16]


def test_purging_is_due_once_a_minute_per_process() -> None:
    start = 10_000_000.0
    assert pass_claims.purge_due(start)
    assert not pass_claims.purge_due(start + 30)
    assert pass_claims.purge_due(start + pass_claims.PURGE_EVERY_S)
