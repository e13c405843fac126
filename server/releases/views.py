"""The release API: admins publish wheels and roll them out; kiosks download what they are
offered.

Admin (``/v1/admin/…``, the role admin): ``POST/GET releases``, ``POST/GET rollouts``,
``GET rollouts/{id}`` (evaluated first, then counted per wave), ``POST rollouts/{id}/halt``,
``/resume``, ``/cancel``. Device: ``GET /v1/device/releases/{version}/wheel`` with the
kiosk's session, only while its layer offers it that version (else ``403 not_offered``),
streamed from a per-process copy of the wheel, at most :data:`MAX_DOWNLOADS` at once per
process (else ``429``: a kiosk retries at its next heartbeat, and taps keep their share of
the device ceiling).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from core.wire_releases import (
    MAX_WHEEL_BYTES,
    ReleaseList,
    ReleasePublished,
    ReleaseUpload,
    RolloutInfo,
    RolloutList,
    RolloutRequest,
)
from server.appkeys import ADMIN, CLOCK, CONFIG, DATABASE, DEVICE
from server.fleet.sessions import now_iso
from server.http.bodies import decode_body, read_raw
from server.http.downloads import HeldFiles, send_held
from server.http.middleware import json_error
from server.http.operations import Operation
from server.http.refusals import in_transaction, run_refusing
from server.http.views import json_response
from server.releases import evaluate, rollouts, store
from server.releases.errors import ReleaseProblem
from server.releases.heartbeat import ReleaseCache, cache_for
from server.releases.layers import winning
from server.storage.connection import Connection

log = logging.getLogger(__name__)

#: The upload: the wheel in base64 (4/3) plus the JSON around it.
MAX_UPLOAD_BYTES = MAX_WHEEL_BYTES * 4 // 3 + 64 * 1024
MAX_DOWNLOADS = 32
#: Wheels kept in memory per process (the one being rolled out, and one more).
KEPT_WHEELS = 2


def _cache(request: web.Request) -> ReleaseCache:
    return cache_for(request.app[DATABASE].target)


def _now(request: web.Request) -> str:
    return now_iso(request.app[CLOCK]())


async def publish(request: web.Request) -> web.Response:
    """``POST /v1/admin/releases``: store a signed wheel (checked first)."""
    upload = decode_body(await read_raw(request, MAX_UPLOAD_BYTES), ReleaseUpload)
    key = request.app[CONFIG].releases.release_key
    try:
        await asyncio.to_thread(store.check_upload, upload, key)
    except ReleaseProblem as exc:
        log.warning("release %s refused: %s", upload.version, exc)
        raise json_error(web.HTTPBadRequest, exc.code, str(exc)) from exc
    user, now = request[ADMIN], _now(request)
    info, created = await in_transaction(
        request, lambda conn: store.publish(conn, upload, user, now)
    )
    if created:
        log.info("admin %s published release %s (%s, %d bytes)", user, info.version,
                 info.filename, info.size)  # fmt: skip
    return json_response(ReleasePublished(info, created))


async def list_releases(request: web.Request) -> web.Response:
    """``GET /v1/admin/releases``."""
    return json_response(ReleaseList(await in_transaction(request, store.list_releases)))


async def start_rollout(request: web.Request) -> web.Response:
    """``POST /v1/admin/rollouts``: offer a release to a layer, wave by wave."""
    body = decode_body(await read_raw(request), RolloutRequest)
    user, now = request[ADMIN], _now(request)
    started = await in_transaction(request, lambda conn: rollouts.start(conn, body, user, now))
    _cache(request).invalidate()
    log.info("admin %s started rollout %d of %s to %s %s, waves %s", user, started.id,
             started.version, started.scope, started.target or "-", started.waves)  # fmt: skip
    return json_response(started)


def _evaluated(conn: Connection, rollout_id: int, request: web.Request) -> RolloutInfo:
    now = request.app[CLOCK]()
    current = evaluate.evaluate(conn, rollout_id, now)
    return evaluate.status(conn, current, now)


async def get_rollout(request: web.Request) -> web.Response:
    """``GET /v1/admin/rollouts/{id}``: evaluated now, with per-wave counts."""
    rollout_id = _rollout_id(request)
    found = await run_refusing(request, lambda conn: _evaluated(conn, rollout_id, request))
    _cache(request).invalidate()
    return json_response(found)


async def list_rollouts(request: web.Request) -> web.Response:
    """``GET /v1/admin/rollouts``: the latest 100, running ones evaluated first."""
    now = request.app[CLOCK]()

    def read(conn: Connection) -> list[RolloutInfo]:
        for rollout in rollouts.list_rollouts(conn):
            if rollout.state == "running":
                evaluate.evaluate(conn, rollout.id, now)
        return rollouts.list_rollouts(conn)

    found = await run_refusing(request, read)
    _cache(request).invalidate()
    return json_response(RolloutList(found))


def _mover(verb: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        rollout_id, user, now = _rollout_id(request), request[ADMIN], _now(request)
        reason = f"halted by {user}"
        moved = await in_transaction(
            request, lambda conn: rollouts.move(conn, rollout_id, verb, now, reason)
        )
        _cache(request).invalidate()
        log.info("admin %s: rollout %d %s", user, rollout_id, moved.state)
        return json_response(moved)

    handler.__doc__ = f"``POST /v1/admin/rollouts/{{id}}/{verb}``"
    return handler


def _rollout_id(request: web.Request) -> int:
    text = request.match_info["rollout_id"]
    if not text.isdigit() or len(text) > 12:
        raise json_error(web.HTTPNotFound, "not_found", f"no rollout {text[:20]!r}")
    return int(text)


# -- the kiosk's download ----------------------------------------------------------------


#: This process's copies of wheels, by (version, sha256).
_HELD = HeldFiles(KEPT_WHEELS)


async def download(request: web.Request) -> web.StreamResponse:
    """``GET /v1/device/releases/{version}/wheel``: the wheel this kiosk is offered."""
    device = request[DEVICE]
    version = request.match_info["version"]
    cache = _cache(request)
    layers = await request.app[DATABASE].run(cache.current_layers)
    layer = winning(layers, device.device_id, device.site)
    if layer is None or layer.version != version or not layer.offers(device.device_id):
        raise json_error(web.HTTPForbidden, "not_offered", f"release {version} is not offered"
                         " to this kiosk now")  # fmt: skip

    async def load() -> bytes | None:
        return await request.app[DATABASE].run(store.wheel_bytes, version)

    return await send_held(
        request,
        _HELD,
        (version, layer.sha256),
        load,
        limit=MAX_DOWNLOADS,
        missing=f"no release {version}",
        content_type="application/octet-stream",
        filename=layer.filename,
    )


_ADMIN_ERRORS = (404, 409)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/v1/admin/releases",
        publish,
        "admin",
        "Publish a signed release wheel (base64 in JSON, up to 64 MiB): its size and SHA-256"
        " are checked, and its signature when [releases] release_key is set; the same"
        " version with other bytes is 409",
        request=ReleaseUpload,
        response=ReleasePublished,
        errors=(409, 413),
    ),
    Operation(
        "GET",
        "/v1/admin/releases",
        list_releases,
        "admin",
        "Every release, newest first",
        response=ReleaseList,
    ),
    Operation(
        "POST",
        "/v1/admin/rollouts",
        start_rollout,
        "admin",
        "Roll a release out to the fleet, a site or a device in waves that halt by themselves"
        " when the failure rate passes the threshold; replaces the layer's previous rollout",
        request=RolloutRequest,
        response=RolloutInfo,
        errors=(404,),
    ),
    Operation(
        "GET",
        "/v1/admin/rollouts",
        list_rollouts,
        "admin",
        "The latest 100 rollouts, newest first (running ones evaluated first)",
        response=RolloutList,
    ),
    Operation(
        "GET",
        "/v1/admin/rollouts/{rollout_id}",
        get_rollout,
        "admin",
        "One rollout, evaluated now: per wave the kiosks offered, installing, in trial,"
        " committed, failed and rolled back; versions its kiosks run per site",
        response=RolloutInfo,
        errors=(404,),
    ),
    *(
        Operation(
            "POST",
            f"/v1/admin/rollouts/{{rollout_id}}/{verb}",
            _mover(verb),
            "admin",
            summary,
            response=RolloutInfo,
            errors=_ADMIN_ERRORS,
        )
        for verb, summary in (
            ("halt", "Halt a running rollout: nothing more is offered until it resumes"),
            ("resume", "Resume a halted rollout at the wave it was in"),
            (
                "cancel",
                "Cancel a rollout for good: nothing more is offered, kiosks stay where they are",
            ),
        )
    ),
    Operation(
        "GET",
        "/v1/device/releases/{version}/wheel",
        download,
        "device",
        "The release wheel this kiosk is offered (403 not_offered otherwise); check it"
        " against the offer's size, sha256 and signature",
        errors=(403, 404, 429),
        media_type="application/octet-stream",
    ),
)
