"""Request handlers: parse and validate the body, call the domain code, answer JSON."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiohttp import web

from server.appkeys import CLOCK, CONFIG, DATABASE, DEVICE, SNAPSHOTS, VERIFIER
from server.audit import ingestion as audit
from server.errors import BadRequest
from server.fleet.devices import record_heartbeat
from server.http import validation as v
from server.http.operations import Operation
from server.verify.qr import MAX_TOKEN_LEN, token_ref
from server.verify.service import Verification, verify_response

log = logging.getLogger(__name__)

TAP_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
CREDENTIAL_KINDS = frozenset({"id_card", "ss_card", "qr"})
CARD_TYPES = frozenset({"resident", "J", "I", "Y"})
MAX_HEARTBEAT_BYTES = 16 * 1024

_dumps = partial(json.dumps, ensure_ascii=False)


def json_response(body: Any) -> web.Response:
    """A 200 JSON response, UTF-8 without ``\\u`` escapes."""
    return web.json_response(body, dumps=_dumps)


async def read_object(request: web.Request) -> dict[str, Any]:
    """Read the body (bounded by ``client_max_size``) as a JSON object."""
    return v.parse_object(await request.read())


def utc_now_iso(request: web.Request) -> str:
    """The server clock, ISO 8601 UTC to the second."""
    return request.app[CLOCK]().astimezone(UTC).isoformat(timespec="seconds")


async def healthz(request: web.Request) -> web.Response:
    """Unauthenticated liveness."""
    return json_response({"status": "ok"})


async def verify(request: web.Request) -> web.Response:
    """``POST /v1/verify``: the four-in-one decision for one credential."""
    body = await read_object(request)
    tap_id = v.req_string(body, "tap_id", pattern=TAP_ID, max_len=64)
    credential = v.obj(body, "credential")
    assert credential is not None
    kind = v.req_string(credential, "kind", where="credential.", max_len=16)
    if kind not in CREDENTIAL_KINDS:
        raise BadRequest(f"credential.kind: must be one of {sorted(CREDENTIAL_KINDS)}")
    device = request[DEVICE]
    site_policy = request.app[CONFIG].policy_for(device.site)
    now = request.app[CLOCK]()
    result: Verification
    if kind == "qr":
        # Opaque: only its length and a short hash are ever logged (server.verify.qr.token_ref).
        token = v.req_string(credential, "token", where="credential.", max_len=MAX_TOKEN_LEN)
        if not token:
            raise BadRequest(f"credential.token: length must be 1..{MAX_TOKEN_LEN}")
        result = await request.app[VERIFIER].verify_token(token, now, site_policy)
        log.debug(
            "verify tap %s device %s qr %s id %s -> %s %s",
            tap_id,
            device.device_id,
            token_ref(token),
            result.masked_id or "-",
            result.decision.outcome,
            ",".join(result.decision.reasons),
        )
        return json_response(verify_response(tap_id, device.site, result, now, site_policy))
    id_number = v.req_string(credential, "id_number", where="credential.", max_len=32)
    card_type = v.string(
        credential, "card_type", where="credential.", max_len=16, required=False, nullable=True
    )
    if card_type is None:
        card_type = "resident"
    elif card_type not in CARD_TYPES:
        raise BadRequest(f"credential.card_type: must be one of {sorted(CARD_TYPES)}")
    result = await request.app[VERIFIER].verify(id_number, now, site_policy, card_type=card_type)
    log.debug(
        "verify tap %s device %s id %s -> %s %s",
        tap_id,
        device.device_id,
        result.masked_id,
        result.decision.outcome,
        ",".join(result.decision.reasons),
    )
    return json_response(verify_response(tap_id, device.site, result, now, site_policy))


def accepts_gzip(request: web.Request) -> bool:
    """Whether ``Accept-Encoding`` lists gzip (with a non-zero quality)."""
    for item in request.headers.get("Accept-Encoding", "").split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() in ("gzip", "*"):
            quality = params.strip().lower()
            return quality not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


async def snapshot(request: web.Request) -> web.Response:
    """``GET /v1/snapshot``: the device's site's signed snapshot for its offline cache."""
    built = await request.app[SNAPSHOTS].get(request[DEVICE].site)
    headers = {"Vary": "Accept-Encoding", "Cache-Control": "no-store"}
    body = built.body
    if accepts_gzip(request):
        body = built.gzip_body
        headers["Content-Encoding"] = "gzip"
    return web.Response(
        body=body, content_type="application/json", charset="utf-8", headers=headers
    )


async def audit_upload(request: web.Request) -> web.Response:
    """``POST /v1/audit``: store a batch of journal events, idempotently."""
    events = audit.parse_batch(await read_object(request))
    device = request[DEVICE]
    result = await request.app[DATABASE].run(
        audit.ingest, device.device_id, events, utc_now_iso(request)
    )
    return json_response(result.to_json())


async def heartbeat(request: web.Request) -> web.Response:
    """``POST /v1/heartbeat``: remember the device's last status; answer the server time."""
    body = await read_object(request)
    v.refuse_clear_ids(body, "")  # the body is stored: never a clear ID number in it
    v.req_string(body, "boot_id", min_len=1, max_len=64)
    v.number(body, "uptime_s")
    v.string(body, "version", max_len=64, required=False)
    if "clock_trusted" in body:
        v.boolean(body, "clock_trusted")
    v.integer(body, "journal_pending", required=False)
    v.obj(body, "reader", required=False)
    status_json = _dumps(body, sort_keys=True)
    if len(status_json.encode("utf-8")) > MAX_HEARTBEAT_BYTES:
        raise BadRequest(f"heartbeat larger than {MAX_HEARTBEAT_BYTES} bytes")
    now = utc_now_iso(request)
    await request.app[DATABASE].run(record_heartbeat, request[DEVICE].device_id, status_json, now)
    return json_response({"server_time": now, "commands": []})


def now_utc() -> datetime:
    """The default server clock."""
    return datetime.now(UTC)


OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/healthz", healthz, "none", "Liveness and storage health"),
    Operation("POST", "/v1/verify", verify, "device", "The four-in-one decision for one tap"),
    Operation("GET", "/v1/snapshot", snapshot, "device", "The site's signed snapshot"),
    Operation("POST", "/v1/audit", audit_upload, "device", "Upload journal events"),
)
