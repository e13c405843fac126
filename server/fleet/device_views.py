"""Device identity endpoints: enrolment, session challenge and session; config at heartbeat.

``POST /v1/enrol`` binds a kiosk-generated public key to a pre-registered serial with a
single-use code. ``POST /v1/session/challenge`` hands out a nonce; ``POST /v1/session`` checks
the kiosk's signature over it (the only signature check of a session's life) and answers a
token; a revoked or quarantined kiosk gets its ``403`` with an audit-only token instead. A
pending rotation makes the session demand a new key, proven by signatures of both keys. The
heartbeat answer is extended with the kiosk's merged configuration (and publishes
``kiosk_up`` on the event bus). ``POST /v1/passes/claim`` claims a signed pass's nonce for the
whole fleet (server/fleet/pass_claims.py).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

import msgspec
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from msgspec import UNSET

from core import wire
from core.signing import enrol_message, session_message, signature_ok
from server.alerts import hooks as alerts
from server.appkeys import CLOCK, CONFIG, DATABASE, DEVICE, DIRECTORY, TOKENS
from server.audit import state as audit_state
from server.commands import links
from server.errors import EnrolRefused
from server.events import presence, publish
from server.fleet import pass_claims, sessions
from server.fleet import registry as fleet
from server.fleet.devices import Device
from server.fleet.health import NEWS_KEYS, health_from
from server.fleet.sessions import (
    DeviceState,
    claim_nonce,
    issue_nonce,
    load_state,
    nonce_status,
    now_iso,
    record_skew,
)
from server.http import views
from server.http.auth import unauthenticated
from server.http.bodies import read_body
from server.http.middleware import json_error
from server.http.operations import Operation
from server.offline.keys import server_public_key, site_key
from server.releases.heartbeat import BeatResult, ReleaseCache, evaluate_after_report, on_heartbeat
from server.releases.heartbeat import cache_for as release_cache
from server.storage.connection import Connection
from server.storage.db import transaction

log = logging.getLogger(__name__)


async def challenge(request: web.Request) -> web.Response:
    """``POST /v1/session/challenge {device_id}`` → ``{nonce, expires_in, server_time}``.

    Every id gets a nonce, known or not, revoked or not, through the same code path (no device
    lookup at all): the answer must not tell which ids exist. The verdict on the device comes
    from ``POST /v1/session``, and only after a valid signature.
    """
    device_id = (await read_body(request, wire.ChallengeRequest)).device_id
    now = sessions.utc_now()
    ttl = request.app[CONFIG].identity.challenge_ttl_s
    nonce = await request.app[DATABASE].run(issue_nonce, device_id, ttl, now)
    return views.json_response(
        {"nonce": nonce, "expires_in": round(ttl), "server_time": now_iso(now)}
    )


#: Checked against signatures for ids without a key (unknown, not enrolled), so that every
#: refusal before a valid signature costs one Ed25519 verification and reads the same.
_NOBODY_KEY = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()


def _signed_by_device(state: DeviceState | None, body: wire.SessionRequest) -> DeviceState:
    """The device's state once ``body`` is signed by its registered key; else 401
    ``bad_signature``, alike for unknown, keyless and wrongly signed ids."""
    message = session_message(body.device_id, body.nonce, body.time, body.new_public_key or "")
    key = state.public_key if state is not None and state.public_key else _NOBODY_KEY
    if not signature_ok(key, body.signature, message) or state is None or key == _NOBODY_KEY:
        log.info("bad session signature for device id %s", body.device_id)
        raise unauthenticated("signature does not verify with the registered key", "bad_signature")
    return state


def _finish_session(
    conn: Connection,
    device_id: str,
    nonce: str,
    new_public_key: str,
    skew_s: float,
    now: datetime,
) -> int | None:
    """Burn the nonce, install a new key if any, record the skew; the key epoch (None: replay)."""
    with transaction(conn):
        if not claim_nonce(conn, nonce, now):
            return None
        record_skew(conn, device_id, skew_s)
        if new_public_key:
            return fleet.replace_key(conn, device_id, new_public_key, now)
        row = conn.execute(
            "SELECT key_epoch FROM devices WHERE device_id = ?", (device_id,)
        ).fetchone()
        return int(row[0])


async def _audit_only(
    request: web.Request, state: DeviceState, nonce: str, now: datetime
) -> web.HTTPException:
    """The ``403 revoked`` / ``403 quarantined`` of a validly signed session, carrying an
    audit-only token (:class:`wire.StatusRefusal`): the kiosk learns its status as before and
    can still hand in its pending events, stored flagged (issue 10, part 2). The auth
    middleware honours that token for ``POST /v1/audit`` alone. No key is installed, no
    rotation is asked for, and the clock is not judged (the nonce gives freshness)."""
    device_id = state.device.device_id
    if not await request.app[DATABASE].run(claim_nonce, nonce, now):
        return json_error(web.HTTPConflict, "replay", "this challenge was already used")
    ttl = request.app[CONFIG].identity.session_ttl_s
    expires = int(now.timestamp() + ttl)
    token = request.app[TOKENS].issue(device_id, state.key_epoch, expires, audit_only=True)
    status: Literal["revoked", "quarantined"] = (
        "revoked" if state.status == "revoked" else "quarantined"
    )
    log.info("%s device %s refused a session; audit-only token issued", status, device_id)
    detail = "this device has been revoked" if status == "revoked" else "this device is quarantined"
    answer = wire.StatusRefusal(
        status, f"{detail}: only POST /v1/audit is open to it", token, round(ttl), now_iso(now)
    )
    return web.HTTPForbidden(
        text=msgspec.json.encode(answer).decode(), content_type="application/json"
    )


async def session(request: web.Request) -> web.Response:
    """``POST /v1/session``: a signed challenge → a short-lived session token."""
    body = await read_body(request, wire.SessionRequest)
    device_id, nonce, sent_time = body.device_id, body.nonce, body.time
    new_key, new_signature = body.new_public_key or "", body.new_signature
    db = request.app[DATABASE]
    identity = request.app[CONFIG].identity
    now = sessions.utc_now()
    state = await db.run(load_state, device_id)
    status = await db.run(nonce_status, nonce, device_id, now)
    if status == "used":
        log.warning("replayed session nonce for device id %s refused", device_id)
        raise json_error(web.HTTPConflict, "replay", "this challenge was already used")
    if status != "ok":
        raise unauthenticated(f"challenge {status}: ask for a new one", "bad_nonce")
    state = _signed_by_device(state, body)
    if state.status in ("revoked", "quarantined"):
        raise await _audit_only(request, state, nonce, now)
    message = session_message(device_id, nonce, sent_time, new_key)
    if new_key and not (new_signature and signature_ok(new_key, new_signature, message)):
        raise json_error(
            web.HTTPBadRequest, "bad_request", "new_signature does not verify with new_public_key"
        )
    skew = round(now.timestamp() - sent_time, 3)
    if abs(skew) > identity.clock_skew_s:
        await db.run(claim_nonce, nonce, now)
        log.warning("device %s clock is off by %.0f s: session refused", device_id, skew)
        raise json_error(
            web.HTTPUnauthorized,
            "clock_skew",
            f"kiosk clock differs from the server's by {skew:.0f} s (server_time {now_iso(now)})",
            {"WWW-Authenticate": "Bearer", "X-Server-Time": str(int(now.timestamp()))},
        )
    if state.rotate_pending and not new_key:
        await db.run(claim_nonce, nonce, now)
        raise json_error(
            web.HTTPForbidden, "rotation_required", "register a new key with this session"
        )
    epoch = await db.run(_finish_session, device_id, nonce, new_key, skew, now)
    if epoch is None:
        raise json_error(web.HTTPConflict, "replay", "this challenge was already used")
    if new_key:
        request.app[DIRECTORY].invalidate(device_id)
        log.info("device %s rotated to key %s…", device_id, new_key[:16])
    ttl = identity.session_ttl_s
    expires = int(now.timestamp() + ttl)
    token = request.app[TOKENS].issue(device_id, epoch, expires)
    return views.json_response(
        {
            "token": token,
            "expires_in": round(ttl),
            "server_time": now_iso(now),
            "clock_skew_s": skew,
            "rotated": bool(new_key),
        }
    )


def _enrol(
    conn: Connection, serial: str, code: str, public_key: str, now: datetime
) -> dict[str, Any]:
    with transaction(conn):
        record, _ = fleet.redeem_enrol_code(conn, serial, code, public_key, now)
        return {
            "device_id": record.device_id,
            "serial": record.serial,
            "site": record.site,
            "gate": record.gate,
            # the pseudonym key of its own site; "fleet_key" for kiosks of older releases
            "site_key": (key := site_key(conn, record.site)),
            "fleet_key": key,
            "server_key": server_public_key(conn),
            "server_url": fleet.get_setting(conn, "server_url"),
            "tls_ca": fleet.get_setting(conn, "tls_ca"),
        }


async def enrol(request: web.Request) -> web.Response:
    """``POST /v1/enrol {serial, code, public_key, signature}``: register a kiosk's own key."""
    body = await read_body(request, wire.EnrolRequest)
    serial, public_key, signature = body.serial, body.public_key, body.signature
    code = fleet.normalise_code(body.code)
    if not signature_ok(public_key, signature, enrol_message(serial, code, public_key)):
        raise unauthenticated("signature does not verify with public_key", "bad_signature")
    now = sessions.utc_now()
    try:
        answer = await request.app[DATABASE].run(_enrol, serial, code, public_key, now)
    except EnrolRefused as exc:
        log.warning("enrolment of serial %s refused: %s", serial, exc.error)
        status = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 409: web.HTTPConflict}
        raise json_error(status[exc.status], exc.error, str(exc)) from exc
    request.app[DIRECTORY].invalidate(answer["device_id"])
    log.info("serial %s enrolled as %s with key %s…", serial, answer["device_id"], public_key[:16])
    return views.json_response(answer)


async def heartbeat(request: web.Request) -> web.Response:
    """``POST /v1/heartbeat``, answered with ``config_version`` and the merged ``config``.

    A heartbeat carrying ``sent_at`` (kiosk wall clock, unix seconds) also gets
    ``clock_skew_s`` (server minus kiosk). The kiosk's ``journal`` report is kept as the
    audit state alerts are raised from; the answer's ``audit`` says what the server holds of
    this kiosk's audit (so a tool can tell a kiosk with a past from a new one). Its
    ``update`` report is kept when it changed, and the answer's ``update`` offers the release
    its rollout wants it to run (server/releases/heartbeat.py).
    """
    beat, now, status = await views.accept_heartbeat(request)
    skew = None
    if beat.sent_at is not None:
        skew = round(sessions.utc_now().timestamp() - beat.sent_at, 3)
    device = request[DEVICE]
    db = request.app[DATABASE]
    extras = await db.run(_heartbeat_extras, device, skew, beat, now, release_cache(db.target))
    version, config, history, back, pending, update = extras
    answer = wire.HeartbeatAnswer(
        now,
        pending,
        version,
        config,
        UNSET if skew is None else skew,
        history,
        UNSET if update.offer is None else update.offer,
    )
    if update.evaluate is not None:  # a kiosk reported a final state: halt or advance now?
        await evaluate_after_report(db, update.evaluate, request.app[CLOCK]())
    _announce(request, back, beat.journal)
    if back:  # announced down, maybe by another process: its offline alert clears now
        await alerts.observe_presence(request.app, device.device_id, device.site, device.gate, True)
    await alerts.observe_heartbeat(request.app, device, status)
    _publish_health_news(request.app, device, status)
    return views.json_response(msgspec.to_builtins(answer))


#: Per process: the last health news published per kiosk (a few bytes each).
HEALTH_SEEN = web.AppKey("health_seen", dict[str, tuple[Any, ...]])


def _publish_health_news(app: web.Application, device: Device, status: dict[str, Any]) -> None:
    """``kiosk_health`` when a kiosk's reader, camera, audio, clock, circuit, journal or
    version changed since this process last heard it (not on every heartbeat: 21,390 kiosks
    beat every 30 s, and a board needs news, not the beat)."""
    health = health_from(status, None)
    news = tuple(health[key] for key in NEWS_KEYS)
    seen = app[HEALTH_SEEN]  # made by create_app
    if seen.get(device.device_id) == news:
        return
    seen[device.device_id] = news
    publish(
        app,
        "kiosk_health",
        device_id=device.device_id,
        site=device.site,
        gate=device.gate,
        health={key: health[key] for key in NEWS_KEYS},
    )


def _announce(request: web.Request, back: bool, journal: wire.JournalState | None) -> None:
    """The heartbeat on the event stream: ``kiosk_up``, and an ``alert`` while the kiosk's
    journal is full or has lost events (the state ``GET /v1/admin/audit/alerts`` reports)."""
    device = request[DEVICE]
    where = {"device_id": device.device_id, "site": device.site}
    publish(request.app, "kiosk_up", **where, gate=device.gate, back=back)
    if journal is not None and (journal.full or journal.lost or journal.dead_letters):
        publish(
            request.app,
            "alert",
            **where,
            journal_full=journal.full,
            lost=journal.lost,
            dead_letters=journal.dead_letters,
        )


async def claim_pass(request: web.Request) -> web.Response:
    """``POST /v1/passes/claim {nonce, expires_at}``: 200 when this kiosk is the first to
    use the pass, ``409 replay`` when any kiosk claimed it before (until it expires)."""
    body = await read_body(request, wire.PassClaim)
    device = request[DEVICE]
    now = int(sessions.utc_now().timestamp())
    first = await request.app[DATABASE].run(
        pass_claims.claim_and_purge,
        body.nonce,
        device.device_id,
        body.expires_at,
        now,
        pass_claims.purge_due(),
    )
    if not first:
        log.warning("pass replay refused at device %s", device.device_id)
        raise json_error(web.HTTPConflict, "replay", "this pass was already used")
    publish(request.app, "pass_claimed", device_id=device.device_id, site=device.site)
    return views.json_response(msgspec.to_builtins(wire.PassClaimAnswer(body.nonce, now)))


def _heartbeat_extras(
    conn: Connection,
    device: Device,
    skew_s: float | None,
    beat: wire.Heartbeat,
    now: str,
    releases: ReleaseCache,
) -> tuple[int, dict[str, Any], wire.AuditHistory, bool, list[dict[str, object]], BeatResult]:
    """The heartbeat's writes and the answer's facts: whether the kiosk had been announced
    down (server/events/presence.py), its signed commands not yet acknowledged (the
    fallback for a kiosk whose command socket cannot be held, server/commands), and its
    update offer (its update report kept when it changed)."""
    device_id = device.device_id
    if skew_s is not None:
        record_skew(conn, device_id, skew_s)
    if beat.journal is not None:
        audit_state.record_journal(conn, device_id, beat.journal, now)
    version, config = fleet.merged_config(conn, device_id)
    back = presence.back_up(conn, device_id)
    pending = links.pending_commands(conn, device_id, int(sessions.utc_now().timestamp()))
    update = on_heartbeat(conn, releases, device_id, device.site, beat.version, beat.update, now)
    return version, config, audit_state.history(conn, device_id), back, pending, update


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/v1/passes/claim",
        claim_pass,
        "device",
        "Claim a signed pass's nonce: refused (409 replay) once any kiosk has used it",
        request=wire.PassClaim,
        response=wire.PassClaimAnswer,
        errors=(409,),
    ),
    Operation(
        "POST",
        "/v1/heartbeat",
        heartbeat,
        "device",
        "Kiosk health; remote config",
        request=wire.Heartbeat,
        response=wire.HeartbeatAnswer,
    ),
    Operation(
        "POST",
        "/v1/enrol",
        enrol,
        "none",
        "Register a kiosk key with an enrolment code",
        request=wire.EnrolRequest,
        response=wire.EnrolAnswer,
        errors=(401, 403, 409),
    ),
    Operation(
        "POST",
        "/v1/session/challenge",
        challenge,
        "none",
        "A nonce to sign",
        request=wire.ChallengeRequest,
        response=wire.ChallengeAnswer,
        errors=(401, 403),
    ),
    Operation(
        "POST",
        "/v1/session",
        session,
        "none",
        "A signed challenge for a session token",
        request=wire.SessionRequest,
        response=wire.SessionAnswer,
        errors=(401, 403, 409),
    ),
)
