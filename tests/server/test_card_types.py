"""Foreigner permanent-residence cards: the 15-character permit number of the 2017 "I" card."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core import idnumbers as identity
from server.verify.importer import import_csv

from .conftest import People, ts, write_csv

PERMIT = "USA110085051234"


def test_permit_shape_and_mask() -> None:
    assert identity.is_permit_number(PERMIT)
    assert identity.credential_ok(PERMIT, "I")
    assert not identity.credential_ok(PERMIT, "resident")
    assert not identity.credential_ok("11010519491231002X", "I")
    for bad in ("US1110085051234", "USA11008505123", "USA1100850512345", "usa110085051234"):
        assert not identity.is_permit_number(bad)
    assert identity.mask(PERMIT) == "USA1*******1234"


async def post_verify(
    client: TestClient, auth: dict[str, str], credential: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    resp = await client.post(
        "/v1/verify",
        json={"tap_id": f"t-{uuid.uuid4().hex}", "credential": credential},
        headers=auth,
    )
    body: dict[str, Any] = await resp.json()
    return resp.status, body


@pytest.fixture
def permit_holder(db_path: Path, tmp_path: Path, people: People) -> str:
    """A foreign permanent resident with a green code, recent negative NAT, no travel flag."""
    now = datetime.now(UTC)
    files = {
        "health_code": (
            ["id_number", "colour", "reason", "updated_at"],
            [(PERMIT, "green", "", ts(now - timedelta(hours=1)))],
        ),
        "nat": (
            ["id_number", "sampled_at", "result", "lab"],
            [(PERMIT.lower(), ts(now - timedelta(hours=5)), "negative", "lab")],
        ),
        "vaccination": (
            ["id_number", "dose", "vaccinated_at", "vaccine"],
            [(PERMIT, 1, "2021-05-01", "")],
        ),
        "travel": (
            ["id_number", "flagged", "area", "updated_at"],
            [(PERMIT, "no", "", ts(now))],
        ),
    }
    for kind, (header, rows) in files.items():
        report = import_csv(db_path, kind, write_csv(tmp_path / f"{kind}.csv", header, rows))
        assert report.ok, report.errors
        assert report.imported == 1
    return PERMIT


async def test_i_card_verifies(
    client: TestClient, auth: dict[str, str], permit_holder: str
) -> None:
    status, body = await post_verify(
        client, auth, {"kind": "id_card", "id_number": permit_holder.lower(), "card_type": "I"}
    )
    assert status == 200
    assert body["outcome"] == "pass", body
    assert body["masked_id"] == "USA1*******1234"
    assert permit_holder not in str(body)


async def test_permit_without_card_type_is_invalid(
    client: TestClient, auth: dict[str, str], permit_holder: str
) -> None:
    status, body = await post_verify(client, auth, {"kind": "id_card", "id_number": PERMIT})
    assert status == 200
    assert body["outcome"] == "invalid_credential"
    assert body["reasons"] == ["bad_checksum"]


@pytest.mark.parametrize("card_type", ["resident", "J", "Y", None])
async def test_gb11643_card_types(
    client: TestClient, auth: dict[str, str], people: People, card_type: str | None
) -> None:
    credential = {"kind": "id_card", "id_number": people.passing, "card_type": card_type}
    status, body = await post_verify(client, auth, credential)
    assert status == 200
    assert body["outcome"] == "pass"
    credential["id_number"] = PERMIT
    assert (await post_verify(client, auth, credential))[1]["outcome"] == "invalid_credential"


async def test_i_card_with_18_digit_number_is_invalid(
    client: TestClient, auth: dict[str, str], people: People
) -> None:
    credential = {"kind": "id_card", "id_number": people.passing, "card_type": "I"}
    status, body = await post_verify(client, auth, credential)
    assert status == 200
    assert body["outcome"] == "invalid_credential"


@pytest.mark.parametrize("card_type", ["P", "i", "", 3])
async def test_unknown_card_type(
    client: TestClient, auth: dict[str, str], card_type: object
) -> None:
    credential = {"kind": "id_card", "id_number": PERMIT, "card_type": card_type}
    status, body = await post_verify(client, auth, credential)
    assert status == 400
    assert body["error"] == "bad_request"
    assert "card_type" in body["detail"]
