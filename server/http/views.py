"""Request handlers: decode the body into its :mod:`core.wire` model, call the domain code,
answer JSON."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgspec
from aiohttp import web

from core import wire
from core.idnumbers import is_self_test
from server.alerts import hooks as alerts
from server.appkeys import CLOCK, CONFIG, DATABASE, DEVICE, REPLAY, SNAPSHOTS, VERIFIER
from server.audit import ingestion as audit
from server.events import publish
from server.fleet.devices import Device, store_heartbeat
from server.http.bodies import convert, read_body, read_object, refuse_clear_ids, too_large
from server.http.middleware import json_error
from server.http.openapi import openapi_json
from server.http.operations import Operation
from server.verify.qr import token_ref
from server.verify.service import Verification, verify_response

log = logging.getLogger(__name__)

MAX_HEARTBEAT_BYTES = 16 * 1024

_dumps = partial(json.dumps, ensure_ascii=False)
_encode = msgspec.json.encode


def json_response(body: Any) -> web.Response:
    """A 200 JSON response, UTF-8 without ``\\u`` escapes (msgspec: several times faster than
    ``json.dumps`` on the verify answer)."""
    return web.Response(body=_encode(body), content_type="application/json", charset="utf-8")


def utc_now_iso(request: web.Request) -> str:
    """The server clock, ISO 8601 UTC to the second."""
    return request.app[CLOCK]().astimezone(UTC).isoformat(timespec="seconds")


async def healthz(request: web.Request) -> web.Response:
    """Unauthenticated liveness."""
    return json_response({"status": "ok"})


async def verify(request: web.Request) -> web.Response:
    """``POST /v1/verify``: the four-in-one decision for one credential.

    The tap id enters replay memory (shared by every server process, server/verify/replay.py)
    only once the tap is decided: a body refused with ``400`` (or a crash) leaves it free for
    the kiosk's retry. A tap this process saw decided is ``409`` before any work, one decided
    by another process ``409`` once its claim is refused; two concurrent copies are both
    decided, and the second is still refused.
    """
    body = await read_body(request, wire.VerifyRequest)
    device = request[DEVICE]
    replay = request.app[REPLAY]
    if replay.seen(device.device_id, body.tap_id):
        raise _replayed(device.device_id)
    site_policy = request.app[CONFIG].policy_for(device.site)
    now = request.app[CLOCK]()
    credential = body.credential
    result: Verification
    if isinstance(credential, wire.QrCredential):
        # Opaque: only its length and a short hash are ever logged (server.verify.qr.token_ref).
        result = await request.app[VERIFIER].verify_token(credential.token, now, site_policy)
    else:
        card_type = credential.card_type or "resident"
        result = await request.app[VERIFIER].verify(
            credential.id_number, now, site_policy, card_type=card_type
        )
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "verify tap %s device %s %s -> %s %s",
            body.tap_id,
            device.device_id,
            _seen(credential, result),
            result.decision.outcome,
            ",".join(result.decision.reasons),
        )
    if not await replay.claim(device.device_id, body.tap_id):
        raise _replayed(device.device_id)
    publish_tap(
        request.app,
        device,
        result.decision.outcome,
        result.masked_id,
        list(result.decision.reasons),
        offline=False,
    )
    return json_response(verify_response(body.tap_id, device.site, result, now, site_policy))


def _seen(credential: wire.Credential, result: Verification) -> str:
    """What a log line may say of the credential: masked, or a QR token's length and hash."""
    if isinstance(credential, wire.QrCredential):
        return f"qr {token_ref(credential.token)} id {result.masked_id or '-'}"
    return f"id {result.masked_id}"


def _replayed(device_id: str) -> web.HTTPException:
    log.warning("replayed tap id from device %s refused", device_id)
    return json_error(web.HTTPConflict, "replay", "this tap_id was already used")


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
    result = await audit.submit(
        request.app[DATABASE], device.device_id, events, utc_now_iso(request)
    )
    invalid = 0
    if result.stored:  # a resent batch (all duplicates) counts nothing twice
        recent = alerts.recent_invalid_taps(request.app, ((e.outcome, e.wall_time) for e in events))
        invalid = min(recent, result.stored)
    await alerts.observe_audit(
        request.app, device, list(result.chain_breaks), list(result.conflicts), invalid
    )
    if result.stored and not result.duplicates:
        _publish_offline_taps(request, events)
    if result.chain_breaks or result.conflicts:
        publish(
            request.app,
            "alert",
            device_id=device.device_id,
            site=device.site,
            chain_breaks=len(result.chain_breaks),
            conflicts=len(result.conflicts),
        )
    return json_response(result.to_json())


def publish_tap(
    app: web.Application,
    device: Device,
    outcome: str | None,
    masked_id: str | None,
    reasons: list[str],
    *,
    offline: bool,
) -> None:
    """A decided tap on the event stream, the one shape the board draws, whether the server
    decided it now or the kiosk decided it offline and its audit just arrived. A new
    release's self-test tap (docs/updates.md) is no citizen: guards do not see it."""
    if masked_id is not None and is_self_test(masked_id):
        return
    publish(
        app,
        "tap",
        device_id=device.device_id,
        site=device.site,
        gate=device.gate,
        outcome=outcome,
        masked_id=masked_id,
        reasons=reasons,
        offline=offline,
    )


def _publish_offline_taps(request: web.Request, events: list[audit.AuditEvent]) -> None:
    """Taps a kiosk decided on its own (server unreachable) reach the board when their
    audit events arrive: the live view's only news of them."""
    device = request[DEVICE]
    for event in events:
        if event.kind != "decision" or not event.offline:
            continue
        detail = json.loads(event.detail_json)
        reasons = detail.get("reasons") if isinstance(detail, dict) else None
        publish_tap(
            request.app,
            device,
            event.outcome,
            event.masked_id,
            reasons if isinstance(reasons, list) else [],
            offline=True,
        )


async def accept_heartbeat(request: web.Request) -> tuple[wire.Heartbeat, str, dict[str, Any]]:
    """Check and store a ``POST /v1/heartbeat`` body as the device's last status.

    The body is stored as sent (unknown fields too), so it is searched for clear ID numbers
    before anything else; the typed copy is returned with the server time it was seen at,
    and the body as sent (the alert rules read its reader, sources, audio and cache).
    """
    body = await read_object(request)
    refuse_clear_ids(body)
    heartbeat = convert(body, wire.Heartbeat)
    status_json = _dumps(body, sort_keys=True)
    size = len(status_json.encode("utf-8"))
    if size > MAX_HEARTBEAT_BYTES:
        raise too_large(
            MAX_HEARTBEAT_BYTES, size, f"heartbeat larger than {MAX_HEARTBEAT_BYTES} bytes"
        )
    now = utc_now_iso(request)
    await store_heartbeat(
        request.app[DATABASE], request[DEVICE].device_id, status_json, now, heartbeat
    )
    return heartbeat, now, body


async def openapi(request: web.Request) -> web.Response:
    """``GET /v1/openapi.json``: the spec of every route this server registers."""
    return web.Response(body=openapi_json(), content_type="application/json", charset="utf-8")


def now_utc() -> datetime:
    """The default server clock."""
    return datetime.now(UTC)


OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/healthz", healthz, "none", "Liveness", response=wire.Health),
    Operation(
        "POST",
        "/v1/verify",
        verify,
        "device",
        "The four-in-one decision for one tap",
        request=wire.VerifyRequest,
        response=wire.VerifyResponse,
        errors=(409,),
    ),
    Operation(
        "GET",
        "/v1/snapshot",
        snapshot,
        "device",
        "The site's signed snapshot for the offline cache",
        response=wire.SnapshotDocument,
    ),
    Operation(
        "POST",
        "/v1/audit",
        audit_upload,
        "device",
        "Upload journal events, idempotently",
        request=wire.AuditBatch,
        response=wire.AuditAck,
    ),
    Operation("GET", "/v1/openapi.json", openapi, "none", "This API's OpenAPI 3.1 document"),
)
