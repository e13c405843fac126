"""The OpenAPI document: generated from the route table, committed, served, and true to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core import wire
from server.app import OPERATIONS
from server.http.openapi import build, openapi_json, render, spec_path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_document_is_the_generated_one() -> None:
    """Run ``make openapi`` after changing a route or a model in core/wire.py."""
    assert DOCS.read_text(encoding="utf-8") == render(build(OPERATIONS))


def test_rendering_is_stable() -> None:
    text = render(build(OPERATIONS))
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text == render(json.loads(text))  # keys sorted, nothing order-dependent
    assert openapi_json() == text.encode("utf-8")


def test_every_operation_is_documented_with_its_models() -> None:
    doc = build(OPERATIONS)
    assert doc["openapi"] == "3.1.0"
    schemes = doc["components"]["securitySchemes"]
    assert schemes["deviceSession"]["scheme"] == schemes["adminToken"]["scheme"] == "bearer"
    for op in OPERATIONS:
        item = doc["paths"][spec_path(op.path)][op.method.lower()]
        security = {
            "none": [],
            "device": [{"deviceSession": []}],
            "admin": [{"adminToken": []}],
            "user": [{"userToken": []}, {"boardSession": []}],
        }
        assert item["security"] == security[op.auth], op.path
        if op.request is not None:
            ref = item["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{op.request.__name__}"
        ok = item["responses"]["200"]["content"][op.media_type]["schema"]
        if op.response is not None:
            assert ok["$ref"] == f"#/components/schemas/{op.response.__name__}"
        for status, answer in item["responses"].items():
            if status != "200":
                schema = answer["content"]["application/json"]["schema"]
                assert schema["$ref"] == "#/components/schemas/ErrorBody"


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [("/v1/verify", "post", "409"), ("/v1/session", "post", "401"), ("/v1/audit", "post", "413")],
)
def test_documented_errors(path: str, method: str, status: str) -> None:
    assert status in build(OPERATIONS)["paths"][path][method]["responses"]


def test_unknown_fields_stay_allowed() -> None:
    """docs/api.md: unknown request fields are ignored, so no schema may forbid them."""
    schemas: dict[str, Any] = build(OPERATIONS)["components"]["schemas"]
    assert not [n for n, s in schemas.items() if s.get("additionalProperties") is False]
    assert "VerifyRequest" in schemas and wire.VerifyRequest in {op.request for op in OPERATIONS}


async def test_served_at_v1_openapi_json(client: TestClient, auth: dict[str, str]) -> None:
    resp = await client.get("/v1/openapi.json", headers=auth)
    assert resp.status == 200 and resp.content_type == "application/json"
    assert await resp.read() == DOCS.read_bytes()


async def test_served_without_authentication(client: TestClient) -> None:
    resp = await client.get("/v1/openapi.json")
    assert resp.status == 200


def test_declared_auth_is_what_the_middleware_enforces() -> None:
    """An operation documented as open must be open, and every open path documented so."""
    from server.app import OPERATIONS
    from server.http.auth import OPEN_PATHS, PROTECTED_PREFIX

    for op in OPERATIONS:
        is_open = not op.path.startswith(PROTECTED_PREFIX) or op.path in OPEN_PATHS
        assert is_open == (op.auth == "none"), (op.method, op.path, op.auth)


def test_limits_shared_with_the_server() -> None:
    """The QR token limit the resolver and importer enforce is the one the spec documents."""
    from server.verify import qr

    assert wire.MAX_TOKEN_LEN == qr.MAX_TOKEN_LEN
