"""The voice pack API: admins publish signed packs; kiosks download the one they are given.

Admin (``/v1/admin/…``, the role admin): ``POST/GET voice-packs``. Device, with the kiosk's
session: ``GET /v1/device/voice-packs/{sha256}`` (the pack's facts, its signature among them)
and ``…/{sha256}/pack`` (the zip), only while ``voice.pack`` in the kiosk's merged
configuration (fleet < site < device) is that pack (else ``403 not_offered``, before anything
says whether the pack exists); streamed from a per-process copy, at most
:data:`MAX_DOWNLOADS` at once per process (else ``429``: the kiosk retries at its next
heartbeat, and taps keep their share of the device ceiling).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from core.voicepack import MAX_PACK_BYTES
from core.wire_voice import VoicePackInfo, VoicePackList, VoicePackPublished, VoicePackUpload
from server.appkeys import ADMIN, CLOCK, CONFIG, DATABASE, DEVICE
from server.fleet.registry import merged_config
from server.fleet.sessions import now_iso
from server.http.bodies import decode_body, read_raw
from server.http.downloads import HeldFiles, send_held
from server.http.middleware import json_error
from server.http.operations import Operation
from server.http.refusals import in_transaction
from server.http.views import json_response
from server.voicepacks import store
from server.voicepacks.errors import PackProblem

log = logging.getLogger(__name__)

#: The upload: the pack in base64 (4/3) plus the JSON around it.
MAX_UPLOAD_BYTES = MAX_PACK_BYTES * 4 // 3 + 64 * 1024
MAX_DOWNLOADS = 32
#: Packs kept in memory per process (the one being sent out, and one more).
KEPT_PACKS = 2
PACK_KEY = "voice.pack"


async def publish(request: web.Request) -> web.Response:
    """``POST /v1/admin/voice-packs``: store a signed pack (checked first)."""
    upload = decode_body(await read_raw(request, MAX_UPLOAD_BYTES), VoicePackUpload)
    key = request.app[CONFIG].releases.release_key
    try:
        name = await asyncio.to_thread(store.check_upload, upload, key)
    except PackProblem as exc:
        log.warning("voice pack %s refused: %s", upload.sha256[:12], exc)
        raise json_error(web.HTTPBadRequest, exc.code, str(exc)) from exc
    user, now = request[ADMIN], now_iso(request.app[CLOCK]())
    info, created = await in_transaction(
        request, lambda conn: store.publish(conn, upload, name, user, now)
    )
    if created:
        log.info("admin %s published voice pack %s (%s, %d bytes)", user, info.sha256[:12],
                 info.name, info.size)  # fmt: skip
    return json_response(VoicePackPublished(info, created))


async def list_packs(request: web.Request) -> web.Response:
    """``GET /v1/admin/voice-packs``."""
    return json_response(VoicePackList(await in_transaction(request, store.list_packs)))


# -- the kiosk's download ----------------------------------------------------------------


async def _offered(request: web.Request) -> str:
    """The pack in the path, once the kiosk's merged configuration names it; else 403."""
    sha256 = request.match_info["sha256"]
    device_id = request[DEVICE].device_id
    _version, config = await request.app[DATABASE].run(merged_config, device_id)
    if config.get(PACK_KEY) != sha256:
        raise json_error(web.HTTPForbidden, "not_offered", f"voice pack {sha256[:12]!r} is not"
                         " this kiosk's voice.pack")  # fmt: skip
    return sha256


async def info(request: web.Request) -> web.Response:
    """``GET /v1/device/voice-packs/{sha256}``: the offered pack's facts and signature."""
    sha256 = await _offered(request)
    found = await request.app[DATABASE].run(store.find, sha256)
    if found is None:
        raise json_error(web.HTTPNotFound, "not_found", f"no voice pack {sha256[:12]}")
    return json_response(found)


#: This process's copies of packs (a pack's bytes never change: its name is their hash).
_HELD = HeldFiles(KEPT_PACKS)


async def download(request: web.Request) -> web.StreamResponse:
    """``GET /v1/device/voice-packs/{sha256}/pack``: the zip this kiosk is given."""
    sha256 = await _offered(request)

    async def load() -> bytes | None:
        return await request.app[DATABASE].run(store.pack_bytes, sha256)

    return await send_held(request, _HELD, sha256, load, limit=MAX_DOWNLOADS,
                           missing=f"no voice pack {sha256[:12]}", content_type="application/zip",
                           filename=f"voice-pack-{sha256[:12]}.zip")  # fmt: skip


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/v1/admin/voice-packs",
        publish,
        "admin",
        "Publish a signed voice pack (its zip base64 in JSON, up to 8 MiB): its size, SHA-256"
        " and archive are checked (400 bad_pack), and its signature when [releases]"
        " release_key is set; the same pack again is created false, with another signature 409",
        request=VoicePackUpload,
        response=VoicePackPublished,
        errors=(409, 413),
    ),
    Operation(
        "GET",
        "/v1/admin/voice-packs",
        list_packs,
        "admin",
        "Every voice pack, newest first",
        response=VoicePackList,
    ),
    Operation(
        "GET",
        "/v1/device/voice-packs/{sha256}",
        info,
        "device",
        "The voice pack this kiosk's voice.pack setting names (403 not_offered otherwise):"
        " its name, size and the release key's signature to check it with",
        response=VoicePackInfo,
        errors=(403, 404),
    ),
    Operation(
        "GET",
        "/v1/device/voice-packs/{sha256}/pack",
        download,
        "device",
        "The zip of the voice pack this kiosk's voice.pack setting names (403 not_offered"
        " otherwise); check it against the pack's size, sha256 and signature",
        errors=(403, 404, 429),
        media_type="application/zip",
    ),
)
