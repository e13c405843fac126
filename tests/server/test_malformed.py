"""Bad input on every endpoint: always a 4xx JSON error with an ``error`` key, never a 500."""

from __future__ import annotations

import io
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .test_audit import chain

GOOD_VERIFY = {
    "tap_id": "t-1",
    "credential": {"kind": "id_card", "id_number": "11010519491231002X"},
}


def with_change(base: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    import copy

    doc = copy.deepcopy(base)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


async def expect_error(
    client: TestClient,
    path: str,
    auth: dict[str, str],
    status: int,
    *,
    data: Any = None,
    json: Any = None,
) -> dict[str, Any]:
    resp = await client.post(path, data=data, json=json, headers=auth)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert set(body) == {"error", "detail"}
    assert "Traceback" not in body["detail"]
    return body


RAW_BODIES = [
    b"",
    b"{",
    b"[1, 2]",
    b'"text"',
    b"null",
    b"\xff\xfe",
    b'{"a": NaN',
    b'{"a": NaN}',
    b"[" * 100_000,
]


@pytest.mark.parametrize("path", ["/v1/verify", "/v1/audit", "/v1/heartbeat"])
@pytest.mark.parametrize("raw", RAW_BODIES, ids=range(len(RAW_BODIES)))
async def test_bad_json(client: TestClient, auth: dict[str, str], path: str, raw: bytes) -> None:
    body = await expect_error(client, path, auth, 400, data=raw)
    assert body["error"] == "bad_request"


@pytest.mark.parametrize("path", ["/v1/verify", "/v1/audit", "/v1/heartbeat"])
async def test_oversize(client: TestClient, auth: dict[str, str], path: str) -> None:
    raw = io.BytesIO(b'{"pad": "' + b"x" * (1024 * 1024 + 10) + b'"}')
    body = await expect_error(client, path, auth, 413, data=raw)
    assert body["error"] == "too_large"


VERIFY_CASES = [
    (("tap_id",), KeyError),
    (("tap_id",), ""),
    (("tap_id",), "x" * 65),
    (("tap_id",), "has space"),
    (("tap_id",), "tap/1"),
    (("tap_id",), 42),
    (("credential",), KeyError),
    (("credential",), "110101"),
    (("credential", "kind"), KeyError),
    (("credential", "kind"), "passport"),
    (("credential", "kind"), None),
    (("credential", "id_number"), KeyError),
    (("credential", "id_number"), 110101194912310020),
    (("credential", "id_number"), "1" * 33),
    (("credential", "id_number"), None),
]


@pytest.mark.parametrize(("path", "value"), VERIFY_CASES)
async def test_verify_fields(
    client: TestClient, auth: dict[str, str], path: tuple[str, ...], value: Any
) -> None:
    doc = with_change(GOOD_VERIFY, path, value)
    body = await expect_error(client, "/v1/verify", auth, 400, json=doc)
    assert body["error"] == "bad_request"
    assert path[-1] in body["detail"]


async def test_verify_unknown_fields_ignored(client: TestClient, auth: dict[str, str]) -> None:
    doc = {**GOOD_VERIFY, "extra": [1, 2], "credential": {**GOOD_VERIFY["credential"], "x": 1}}
    resp = await client.post("/v1/verify", json=doc, headers=auth)
    assert resp.status == 200


EVENT_CASES = [
    ("seq", KeyError),
    ("seq", 0),
    ("seq", "1"),
    ("seq", True),
    ("seq", 1.5),
    ("wall_time", 5),
    ("mono_ns", -1),
    ("boot_id", ""),
    ("clock_trusted", "yes"),
    ("kind", "party"),
    ("outcome", 3),
    ("masked_id", "1101-****"),
    ("pseudonym", "not hex"),
    ("offline", None),
    ("cache_age_s", "old"),
    ("latency_ms", -5),
    ("latency_ms", True),
    ("detail", []),
    ("detail", {"blob": "x" * 5000}),
    ("prev_hash", "0" * 63),
    ("hash", KeyError),
    ("hash", "Z" * 64),
]


@pytest.mark.parametrize(("field", "value"), EVENT_CASES)
async def test_audit_event_fields(
    client: TestClient, auth: dict[str, str], field: str, value: Any
) -> None:
    events = chain(1, 2)
    events[1] = with_change(events[1], (field,), value)
    body = await expect_error(client, "/v1/audit", auth, 400, json={"events": events})
    assert "events[1]" in body["detail"]
    assert field in body["detail"]


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"events": []},
        {"events": "x"},
        {"events": [1]},
        {"events": chain(1, 501)},
        {"events": list(reversed(chain(1, 3)))},
        {"events": chain(1, 1) * 2},
    ],
    ids=["missing", "empty", "not-list", "not-object", "too-many", "descending", "repeated"],
)
async def test_audit_batch(client: TestClient, auth: dict[str, str], doc: Any) -> None:
    body = await expect_error(client, "/v1/audit", auth, 400, json=doc)
    assert body["error"] == "bad_request"


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"boot_id": ""},
        {"boot_id": 5},
        {"boot_id": "b", "uptime_s": "long"},
        {"boot_id": "b", "clock_trusted": 1},
        {"boot_id": "b", "journal_pending": -1},
        {"boot_id": "b", "reader": []},
        {"boot_id": "b", "version": ["0.1"]},
    ],
)
async def test_heartbeat_fields(client: TestClient, auth: dict[str, str], doc: Any) -> None:
    body = await expect_error(client, "/v1/heartbeat", auth, 400, json=doc)
    assert body["error"] == "bad_request"


async def test_an_oversized_heartbeat_is_too_large(
    client: TestClient, auth: dict[str, str]
) -> None:
    """413, as docs/api.md documents for bodies that are too large (not a 400)."""
    doc = {"boot_id": "b", "blob": "x" * 20_000}
    body = await expect_error(client, "/v1/heartbeat", auth, 413, json=doc)
    assert body["error"] == "too_large"


async def test_unknown_route_and_method(client: TestClient, auth: dict[str, str]) -> None:
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"
    resp = await client.get("/v1/verify", headers=auth)
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]
    resp = await client.post("/healthz")
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"


HUGE = "1" * 5000  # longer than sys.get_int_max_str_digits(): json raises plain ValueError
BIG = "9" * 4000  # parses, but too big for a float


@pytest.mark.parametrize("path", ["/v1/verify", "/v1/audit", "/v1/heartbeat"])
async def test_huge_integer_literal(client: TestClient, auth: dict[str, str], path: str) -> None:
    raw = ('{"tap_id": "t", "boot_id": "b", "events": [], "n": ' + HUGE + "}").encode()
    body = await expect_error(client, path, auth, 400, data=raw)
    assert body["error"] == "bad_request"


async def test_verify_huge_integer_in_field(client: TestClient, auth: dict[str, str]) -> None:
    raw = '{"tap_id": "t", "credential": {"kind": "id_card", "id_number": ' + HUGE + "}}"
    await expect_error(client, "/v1/verify", auth, 400, data=raw.encode())
    raw = '{"tap_id": "t", "credential": {"kind": "id_card", "id_number": ' + BIG + "}}"
    await expect_error(client, "/v1/verify", auth, 400, data=raw.encode())


@pytest.mark.parametrize("field", ["latency_ms", "cache_age_s", "seq", "mono_ns"])
async def test_audit_big_integer_in_number_field(
    client: TestClient, auth: dict[str, str], field: str
) -> None:
    import json as _json

    events = chain(1, 1)
    events[0][field] = 12345  # placeholder, replaced textually below
    raw = _json.dumps({"events": events}).replace(f'"{field}": 12345', f'"{field}": {BIG}')
    body = await expect_error(client, "/v1/audit", auth, 400, data=raw.encode())
    assert field in body["detail"]


async def test_heartbeat_big_integer_in_number_field(
    client: TestClient, auth: dict[str, str]
) -> None:
    raw = '{"boot_id": "b", "uptime_s": ' + BIG + "}"
    body = await expect_error(client, "/v1/heartbeat", auth, 400, data=raw.encode())
    assert "uptime_s" in body["detail"]
