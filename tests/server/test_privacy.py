"""No clear ID number (18-char GB 11643 shape or 15-char permit) is ever stored from a kiosk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from provisioning.registry import DeviceBundle
from server.storage.db import connect

from .test_audit import chain, event_hash, stored

CLEAR = "110101199003074514"
CLEAR_X = "11010519491231002x"
PERMIT = "USA110085051234"


def rehash(event: dict[str, Any]) -> dict[str, Any]:
    event["hash"] = event_hash(event)
    return event


async def refused(client: TestClient, path: str, auth: dict[str, str], doc: Any) -> str:
    resp = await client.post(path, json=doc, headers=auth)
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["error"] == "bad_request"
    detail: str = body["detail"]
    assert CLEAR not in detail and PERMIT not in detail and CLEAR_X not in detail
    return detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", f"请 {CLEAR} 通过"),
        ("prompt", f"permit {PERMIT}"),
        ("outcome", CLEAR),
        ("boot_id", CLEAR_X),
        ("wall_time", CLEAR),
        ("pseudonym", CLEAR),
        ("masked_id", PERMIT),
        ("unknown_field", f"x:{CLEAR}"),
    ],
)
async def test_audit_clear_id_in_any_field(
    client: TestClient,
    auth: dict[str, str],
    device: DeviceBundle,
    db_path: Path,
    field: str,
    value: str,
) -> None:
    events = chain(1, 2)
    events[1][field] = value
    rehash(events[1])
    detail = await refused(client, "/v1/audit", auth, {"events": events})
    assert f"events[1].{field}" in detail
    assert stored(db_path, device.device_id) == []


@pytest.mark.parametrize(
    ("detail", "named"),
    [
        ({"note": f"card {CLEAR} read"}, "events[0].detail.note"),
        ({"a": {"b": [1, {"c": PERMIT}]}}, "events[0].detail.a.b[1].c"),
        ({CLEAR: 1}, "events[0].detail"),
        ({"list": [f"{PERMIT}"]}, "events[0].detail.list[0]"),
    ],
)
async def test_audit_clear_id_nested_and_in_keys(
    client: TestClient, auth: dict[str, str], detail: dict[str, Any], named: str
) -> None:
    events = chain(1, 1)
    events[0]["detail"] = detail
    rehash(events[0])
    assert named in await refused(client, "/v1/audit", auth, {"events": events})


async def test_audit_hex_strings_are_not_ids(client: TestClient, auth: dict[str, str]) -> None:
    """Digits inside a longer hex string (hashes, pseudonyms) are not a clear ID number."""
    events = chain(1, 1)
    events[0]["pseudonym"] = "ab" + "1" * 18 + "cd" * 20
    events[0]["detail"] = {"tap_id": "k1-" + "1" * 17 + "a"}
    rehash(events[0])
    resp = await client.post("/v1/audit", json={"events": events}, headers=auth)
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("outcome", ["maybe", "PASS", "ok"])
async def test_audit_unknown_outcome(
    client: TestClient, auth: dict[str, str], outcome: str
) -> None:
    events = chain(1, 1)
    events[0]["outcome"] = outcome
    rehash(events[0])
    assert "events[0].outcome" in await refused(client, "/v1/audit", auth, {"events": events})


@pytest.mark.parametrize("outcome", ["pass", "check", "nat_expired", "invalid_credential", "fault"])
async def test_audit_known_outcomes(client: TestClient, auth: dict[str, str], outcome: str) -> None:
    events = chain(1, 1)
    events[0]["outcome"] = outcome
    rehash(events[0])
    resp = await client.post("/v1/audit", json={"events": events}, headers=auth)
    assert resp.status == 200


async def test_audit_null_outcome(client: TestClient, auth: dict[str, str]) -> None:
    events = chain(1, 1)
    events[0]["outcome"] = None
    events[0]["kind"] = "system"
    rehash(events[0])
    resp = await client.post("/v1/audit", json={"events": events}, headers=auth)
    assert resp.status == 200


@pytest.mark.parametrize(
    "wall_time", ["yesterday", "2026-11-23T08:00:00", "2026-11-23", "2026-13-01T00:00:00+08:00"]
)
async def test_audit_wall_time_needs_iso_with_offset(
    client: TestClient, auth: dict[str, str], wall_time: str
) -> None:
    events = chain(1, 1)
    events[0]["wall_time"] = wall_time
    rehash(events[0])
    assert "events[0].wall_time" in await refused(client, "/v1/audit", auth, {"events": events})


@pytest.mark.parametrize("wall_time", ["2026-11-23T00:00:00Z", "2026-11-23T08:00:00.123456+08:00"])
async def test_audit_wall_time_accepted(
    client: TestClient, auth: dict[str, str], wall_time: str
) -> None:
    events = chain(1, 1)
    events[0]["wall_time"] = wall_time
    rehash(events[0])
    resp = await client.post("/v1/audit", json={"events": events}, headers=auth)
    assert resp.status == 200


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"boot_id": CLEAR}, "boot_id"),
        ({"boot_id": "b", "version": PERMIT}, "version"),
        ({"boot_id": "b", "reader": {"errors": {"last": f"read {CLEAR_X}"}}}, "reader.errors.last"),
        ({"boot_id": "b", "reader": {"errors": {CLEAR: 1}}}, "reader.errors"),
        ({"boot_id": "b", "recent": [PERMIT]}, "recent[0]"),
    ],
)
async def test_heartbeat_clear_id_refused(
    client: TestClient,
    auth: dict[str, str],
    device: DeviceBundle,
    db_path: Path,
    doc: dict[str, Any],
    named: str,
) -> None:
    assert named in await refused(client, "/v1/heartbeat", auth, doc)
    with connect(db_path) as conn:
        (last,) = conn.execute(
            "SELECT last_heartbeat FROM devices WHERE device_id = ?", (device.device_id,)
        ).fetchone()
    assert last is None
