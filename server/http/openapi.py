"""The OpenAPI 3.1 document, generated from the route table and the :mod:`core.wire` models.

Nothing here is written by hand per route: paths, methods, auth, bodies and documented
errors all come from the ``Operation`` list the app registers (``server.app.OPERATIONS``),
and the schemas from the models the handlers decode with. So ``docs/openapi.json`` (written
by ``make openapi``, kept equal by a test) and ``GET /v1/openapi.json`` describe exactly what
is served.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from core.wire import ErrorBody
from server.http.operations import Operation

VERSION = "1"
REF = "#/components/schemas/{name}"
#: Statuses any route may answer besides its own (docs/api.md "Error codes").
_BY_AUTH: dict[str, tuple[int, ...]] = {
    "none": (),
    "device": (401, 403),
    "admin": (401, 403),
    "user": (401, 403),
}
_REASONS = {
    200: "OK",
    400: "Bad request: the detail names the field (``events[3].seq: …``)",
    401: "Unauthenticated (missing, forged or expired token; bad signature or code)",
    403: "Refused: revoked, quarantined, not enrolled, rotation required, wrong serial; "
    "another site's data; a missing CSRF token",
    404: "Not found",
    409: "Replay or refused state change",
    413: "Body too large",
    429: "Overloaded: retry after the Retry-After header",
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "device": [{"deviceSession": []}],
    "admin": [{"adminToken": []}],
    "user": [{"userToken": []}, {"boardSession": []}],
    "none": [],
}
_SCHEMES = {
    "deviceSession": {
        "type": "http",
        "scheme": "bearer",
        "description": "A kiosk's session token from POST /v1/session (docs/identity.md).",
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An administrator's token from POST /v1/admin/login or /v1/login.",
    },
    "userToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A person's token from POST /v1/login; the role and sites it carries "
        "decide what the route answers (a guard: 403 for another site).",
    },
    "boardSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "siheyi_session",
        "description": "The board's session cookie; requests that change something also need "
        "the header X-CSRF-Token.",
    },
}
_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")


def build(operations: Sequence[Operation]) -> dict[str, Any]:
    """The OpenAPI document for ``operations``, as plain JSON data."""
    models = _models(operations)
    schemas, components = msgspec.json.schema_components(models, ref_template=REF)
    schema_of = dict(zip(models, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(spec_path(op.path), {})[op.method.lower()] = _operation(op, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Siheyi kiosk and admin API",
            "version": VERSION,
            "description": "The prose, with examples and the rules behind each field, is "
            "docs/api.md. Unknown fields in request bodies are ignored.",
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": _SCHEMES},
    }


def spec_path(route: str) -> str:
    """An aiohttp route as an OpenAPI path: ``{name:regex}`` → ``{name}``."""
    return _PATH_PARAM.sub(r"{\1}", route)


def render(document: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, UTF-8 text, final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@functools.cache
def openapi_json() -> bytes:
    """The served document, built once from the app's route table."""
    # Imported here: server.app imports the handler modules, which serve this document.
    from server.app import OPERATIONS

    return render(build(OPERATIONS)).encode("utf-8")


def _models(operations: Iterable[Operation]) -> tuple[type, ...]:
    seen: dict[type, None] = {ErrorBody: None}
    for op in operations:
        for model in (op.request, op.response):
            if model is not None:
                seen[model] = None
    return tuple(seen)


def _operation(op: Operation, schema_of: dict[type, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "summary": op.summary,
        "operationId": _operation_id(op),
        "security": _SECURITY[op.auth],
        "responses": _responses(op, schema_of),
    }
    parameters = _parameters(op)
    if parameters:
        doc["parameters"] = parameters
    if op.request is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema_of[op.request]}},
        }
    return doc


def _responses(op: Operation, schema_of: dict[type, Any]) -> dict[str, Any]:
    body = schema_of[op.response] if op.response is not None else {"type": "object"}
    if op.media_type != "application/json":
        body = {"type": "string"}
    answers: dict[str, Any] = {
        "200": {"description": "OK", "content": {op.media_type: {"schema": body}}}
    }
    error = {"application/json": {"schema": schema_of[ErrorBody]}}
    for status in sorted(set(_error_statuses(op))):
        answers[str(status)] = {"description": _REASONS.get(status, "Error"), "content": error}
    return answers


def _error_statuses(op: Operation) -> Iterable[int]:
    yield from _BY_AUTH[op.auth]
    yield from op.errors
    if op.request is not None or op.query or "{" in op.path:
        yield 400
    if "{" in op.path:
        yield 404
    if op.request is not None:
        yield 413
    if op.path.startswith("/v1/"):
        yield 429


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(op.path)
    ]
    params += [
        {"name": name, "in": "query", "required": False, "description": text,
         "schema": {"type": "string"}}
        for name, text in op.query
    ]  # fmt: skip
    return params


def _operation_id(op: Operation) -> str:
    words = re.findall(r"[A-Za-z0-9]+", _PATH_PARAM.sub(r"by \1", op.path))
    return op.method.lower() + "".join(w.capitalize() for w in words if w != "v1")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m server.http.openapi [PATH]``: write the document (``make openapi``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    target = Path(args[0] if args else "docs/openapi.json")
    target.write_bytes(openapi_json())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
