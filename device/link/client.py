"""HTTP client for the central server: the only module of the agent that knows URLs.

The kiosk authenticates with its own Ed25519 key (docs/identity.md): it asks for a challenge,
signs it and gets a short-lived session token, which every request then carries. All of this
is transparent to callers:

* a token nearing expiry is renewed in the background; an expired or refused one
  (``401 session_expired``) is renewed and the request retried once — so a kiosk that was
  offline for weeks simply signs a new challenge (its key never expires);
* a server that says the kiosk's clock is off (``401 clock_skew``) is believed: the client
  signs with the server's time and reports the offset (:attr:`ServerClient.clock_skew_s`);
* a pending key rotation (``403 rotation_required``, or :meth:`ServerClient.rotate_key`) is
  carried out with the session: new key saved first, proven by both keys, then committed;
* a revoked or quarantined kiosk is refused its session (``403 revoked`` / ``quarantined``,
  raised as :class:`ServerRejected`, so every tap decides ``check``), but the refusal carries
  an audit-only token, kept and used for ``POST /v1/audit`` alone: the journal still drains
  (the server stores those events flagged);
* ``429``/``503`` with ``Retry-After`` are honoured: until then (plus jitter) every call fails
  fast with :class:`ServerUnavailable` carrying ``retry_after``;
* the heartbeat answer's ``config_version`` / ``config`` are kept
  (:attr:`ServerClient.config`) and announced through ``on_config``; its release offer
  (``update``) is handed to ``on_update`` with every answer that has one (the updater,
  docs/updates.md, decides what to do about it);
* a release is streamed from this server alone with the session (:meth:`fetch_chunks`).

Errors are mapped to two kinds the agent cares about: the server could not be reached in time
(:class:`ServerUnavailable`: decide offline, retry later) and the server answered but refused
(:class:`ServerRejected`). The private key is never sent or logged: only signatures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import aiohttp
import aiohttp.abc
import msgspec

from core import wire
from core.signing import session_message
from device.errors import ServerError, ServerRejected, ServerUnavailable
from device.link.identity import DeviceIdentity

log = logging.getLogger(__name__)

ConfigListener = Callable[[int, dict[str, Any]], None]
UpdateListener = Callable[[wire.UpdateOffer], None]
ChunkSink = Callable[[bytes], Awaitable[None]]
T = TypeVar("T")
#: Retry-After values are stretched by up to this fraction so kiosks do not return in step.
RETRY_JITTER = 0.5
AUDIT_PATH = "/v1/audit"
#: Refusals of a session that come with an audit-only token (docs/identity.md).
CUT_OFF = ("revoked", "quarantined")


def jittered(
    interval_s: float, fraction: float = 0.1, rng: Callable[[], float] = random.random
) -> float:
    """``interval_s`` spread uniformly by ±``fraction``: use it for every periodic timer."""
    return interval_s * (1.0 + fraction * (2.0 * rng() - 1.0))


def tls_context(tls_ca: str) -> ssl.SSLContext | None:
    """An SSL context trusting only the PEM CA(s) of the bundle, hostname check on."""
    if not tls_ca.strip():
        return None
    context = ssl.create_default_context(cadata=tls_ca)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def checked(data: Any, model: type[T], path: str) -> T:
    """The server's answer as ``model``; one that breaks the API is a server fault.

    The kiosk then behaves as if the server were unreachable (decides offline, retries
    later) rather than acting on a half-understood answer.
    """
    try:
        return msgspec.convert(data, model)
    except msgspec.ValidationError as exc:
        raise ServerUnavailable(f"{path}: answer breaks the API: {wire.error_text(exc)}") from exc


def _retry_after(headers: Mapping[str, str]) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


class ServerClient:
    """A long-lived aiohttp session bound to one device identity.

    ``identity`` signs sessions (the normal case). ``token`` instead sends a fixed bearer
    token and never re-authenticates (tools and tests).
    """

    def __init__(
        self,
        base_url: str,
        identity: DeviceIdentity | None = None,
        *,
        token: str | None = None,
        tls_ca: str = "",
        resolver: aiohttp.abc.AbstractResolver | None = None,
        wall_clock: Callable[[], float] = time.time,
        on_config: ConfigListener | None = None,
    ) -> None:
        if identity is None and token is None:
            raise ValueError("ServerClient needs an identity or a token")
        self._base = base_url.rstrip("/")
        self._identity = identity
        self._static_token = token
        self._ssl = tls_context(tls_ca)
        self._resolver = resolver
        self._wall_clock = wall_clock
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_expires = 0.0  # time.monotonic()
        self._token_ttl = 0.0
        self._audit_token: str | None = None  # a revoked/quarantined kiosk's: audit only
        self._audit_expires = 0.0  # time.monotonic()
        self._auth_lock = asyncio.Lock()
        self._renewal: asyncio.Task[None] | None = None
        self._busy_until = 0.0  # time.monotonic()
        self._clock_offset = 0.0  # server minus kiosk, learnt from a clock_skew refusal
        self.clock_skew_s: float | None = None  # last skew the server reported
        self.config_version: int | None = None
        self.config: dict[str, Any] = {}
        self.on_config = on_config
        self.on_update: UpdateListener | None = None

    async def __aenter__(self) -> ServerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def device_id(self) -> str:
        return self._identity.device_id if self._identity is not None else ""

    @property
    def retry_after(self) -> float:
        """Seconds left of the server's last Retry-After (0 when none is running)."""
        return max(0.0, self._busy_until - time.monotonic())

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=8,
                ttl_dns_cache=300,
                resolver=self._resolver,
                ssl=self._ssl if self._ssl is not None else True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda o: json.dumps(o, ensure_ascii=False),
            )
        return self._session

    async def close(self) -> None:
        if self._renewal is not None and not self._renewal.done():
            self._renewal.cancel()
            await asyncio.gather(self._renewal, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- transport -----------------------------------------------------------------------

    def _check_busy(self, path: str) -> None:
        left = self.retry_after
        if left > 0:
            raise ServerUnavailable(f"{path}: server asked to retry in {left:.1f} s", left)

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: Mapping[str, str],
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """One HTTP exchange → (status, JSON object, headers); transport trouble is Unavailable."""
        session = self._get_session()
        try:
            async with session.request(
                method, self._base + path, json=body, headers=dict(headers)
            ) as resp:
                text = await resp.text()
                status, resp_headers = resp.status, resp.headers
        except aiohttp.ClientError as exc:
            raise ServerUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise ServerUnavailable(f"{path}: {exc}") from exc
        if status in (429, 503):
            wait = _retry_after(resp_headers) * (1.0 + RETRY_JITTER * random.random())
            self._busy_until = max(self._busy_until, time.monotonic() + wait)
            log.warning("%s: server overloaded (%d), backing off %.1f s", path, status, wait)
            raise ServerUnavailable(f"{path}: server overloaded ({status})", wait)
        if status >= 500:
            raise ServerUnavailable(f"{path}: server error {status}")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ServerUnavailable(f"{path}: response is not JSON") from exc
        if not isinstance(data, dict):
            raise ServerUnavailable(f"{path}: response is not a JSON object")
        return status, data, resp_headers

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None, timeout_s: float
    ) -> dict[str, Any]:
        """An authenticated request within ``timeout_s`` (authentication included)."""
        self._check_busy(path)
        try:
            async with asyncio.timeout(timeout_s):
                for attempt in (0, 1):
                    token = await self._bearer(audit=method == "POST" and path == AUDIT_PATH)
                    status, data, _ = await self._send(
                        method, path, body, {"Authorization": f"Bearer {token}"}
                    )
                    error = str(data.get("error", ""))
                    if (
                        status == 401
                        and attempt == 0
                        and self._identity is not None
                        and error in ("session_expired", "unauthenticated")
                    ):
                        log.info("%s: session refused (%s), signing in again", path, error)
                        self._token = self._audit_token = None
                        continue
                    if status >= 400:
                        raise ServerRejected(status, error, str(data.get("detail", "")))
                    return data
        except TimeoutError as exc:
            raise ServerUnavailable(f"{path}: no answer within {timeout_s:.2f} s") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def ws_connect(self, path: str, *, heartbeat: float) -> aiohttp.ClientWebSocketResponse:
        """A WebSocket to ``path`` with the session token, on the same pinned TLS session as
        every other request; a refused token (401) makes the next attempt sign a new one."""
        token = await self._bearer()
        try:
            return await self._get_session().ws_connect(
                self._base + path,
                headers={"Authorization": f"Bearer {token}"},
                heartbeat=heartbeat,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                await self.authenticate(force=True)
            raise

    # --- sessions --------------------------------------------------------------------------

    async def _bearer(self, *, audit: bool = False) -> str:
        """The session token; for ``audit`` (``POST /v1/audit``) the audit-only token of a
        revoked or quarantined kiosk will do when there is no full session."""
        if self._static_token is not None:
            return self._static_token
        now = time.monotonic()
        if self._token is not None and now < self._token_expires:
            margin = max(30.0, 0.1 * self._token_ttl)
            if now >= self._token_expires - margin and self._renewal is None:
                self._renewal = asyncio.ensure_future(self._renew_in_background())
            return self._token
        if audit and self._audit_token is not None and now < self._audit_expires:
            return self._audit_token
        try:
            await self.authenticate()
        except ServerRejected as exc:
            # Cut off: the refusal handed us an audit-only token; the journal still drains.
            if audit and exc.error in CUT_OFF and self._audit_token is not None:
                return self._audit_token
            raise
        assert self._token is not None
        return self._token

    async def _renew_in_background(self) -> None:
        try:
            async with asyncio.timeout(30.0):
                await self.authenticate(force=True)
        except (ServerError, TimeoutError) as exc:
            log.info("session renewal failed, will retry: %s", exc)
        finally:
            self._renewal = None

    async def authenticate(self, *, force: bool = False) -> None:
        """Sign a fresh challenge and store the session token (coalesced across callers)."""
        if self._identity is None:
            return
        token_before = self._token
        async with self._auth_lock:
            if self._token is not None and self._token != token_before:
                return  # someone else just did it
            if not force and self._token is not None and time.monotonic() < self._token_expires:
                return
            await self._sign_in(self._identity)

    async def _sign_in(self, identity: DeviceIdentity) -> None:
        for _ in range(4):
            nonce = await self._challenge(identity.device_id)
            body = msgspec.to_builtins(self._session_body(identity, nonce))
            status, data, headers = await self._send("POST", "/v1/session", body, {})
            error = str(data.get("error", ""))
            if status == 200:
                self._start_session(identity, checked(data, wire.SessionAnswer, "/v1/session"))
                return
            if status == 401 and error == "clock_skew" and "X-Server-Time" in headers:
                self._clock_offset = float(headers["X-Server-Time"]) - self._wall_clock()
                self.clock_skew_s = self._clock_offset
                log.warning(
                    "kiosk clock is off by %.0f s; signing with server time", self._clock_offset
                )
                continue
            if status == 403 and error == "rotation_required":
                log.info("server asks for a new key: rotating")
                identity.begin_rotation()
                continue
            if status == 401 and error == "bad_signature" and identity.promote_pending():
                log.info("current key refused; switched to the pending rotation key")
                continue
            if status == 403 and error in CUT_OFF:
                self._keep_audit_token(data)
            raise ServerRejected(status, error, str(data.get("detail", "")))
        raise ServerRejected(401, "unauthenticated", "could not establish a session")

    def _keep_audit_token(self, data: dict[str, Any]) -> None:
        """Keep the audit-only token a revoked or quarantined kiosk's refusal carries (a
        server from before it sends none: then the journal waits, as it did)."""
        try:
            refusal = msgspec.convert(data, wire.StatusRefusal)
        except msgspec.ValidationError:
            self._audit_token = None
            return
        if self._audit_token is None:
            log.warning("kiosk is %s: only audit upload stays open", refusal.error)
        self._audit_token = refusal.audit_token
        self._audit_expires = time.monotonic() + refusal.expires_in * 0.95

    async def _challenge(self, device_id: str) -> str:
        """A fresh nonce to sign: every id gets one alike, known, unknown, revoked or not;
        ``POST /v1/session`` tells the kiosk's status, after a valid signature."""
        path = "/v1/session/challenge"
        request = msgspec.to_builtins(wire.ChallengeRequest(device_id))
        status, data, _ = await self._send("POST", path, request, {})
        if status != 200:
            raise ServerRejected(status, str(data.get("error", "")), str(data.get("detail", "")))
        return checked(data, wire.ChallengeAnswer, path).nonce

    def _start_session(self, identity: DeviceIdentity, answer: wire.SessionAnswer) -> None:
        if answer.rotated:
            identity.commit_rotation()
        self._token = answer.token
        self._audit_token = None  # released from quarantine: the full token serves the audit
        self._token_ttl = answer.expires_in
        self._token_expires = time.monotonic() + answer.expires_in * 0.95
        # the skew of the corrected time we signed with, plus that correction
        self.clock_skew_s = round(answer.clock_skew_s + self._clock_offset, 3)

    def _session_body(self, identity: DeviceIdentity, nonce: str) -> wire.SessionRequest:
        sent = int(self._wall_clock() + self._clock_offset)
        new_key = identity.pending_public_key_hex
        message = session_message(identity.device_id, nonce, sent, new_key)
        return wire.SessionRequest(
            device_id=identity.device_id,
            nonce=nonce,
            time=sent,
            signature=identity.sign(message),
            new_public_key=new_key or None,
            new_signature=identity.sign_pending(message) if new_key else None,
        )

    async def rotate_key(self, timeout_s: float = 30.0) -> str:
        """Kiosk-initiated rotation: a new key, registered with a session; its public hex."""
        if self._identity is None:
            raise ValueError("no identity to rotate")
        self._identity.begin_rotation()
        try:
            async with asyncio.timeout(timeout_s):
                await self.authenticate(force=True)
        except TimeoutError as exc:
            raise ServerUnavailable(f"key rotation: no answer within {timeout_s:.0f} s") from exc
        if self._identity.has_pending:  # pragma: no cover - the server ignored the new key
            raise ServerRejected(409, "rotation_failed", "the server did not take the new key")
        return self._identity.public_key_hex

    # --- endpoints -------------------------------------------------------------------------

    async def post(self, path: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """POST JSON and return the decoded object; every failure becomes a ServerError."""
        return await self._call("POST", path, body, timeout_s)

    async def health(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """GET /healthz: is the server there at all (the circuit breaker's probe)."""
        self._check_busy("/healthz")
        try:
            async with asyncio.timeout(timeout_s):
                status, data, _ = await self._send("GET", "/healthz", None, {})
        except TimeoutError as exc:
            raise ServerUnavailable(f"/healthz: no answer within {timeout_s:.2f} s") from exc
        if status != 200:
            raise ServerUnavailable(f"/healthz: status {status}")
        return data

    async def get_json(self, path: str, timeout_s: float) -> dict[str, Any]:
        """GET a JSON object from a device endpoint (the snapshot)."""
        return await self._call("GET", path, None, timeout_s)

    async def verify(
        self,
        tap_id: str,
        kind: str,
        id_number: str,
        timeout_s: float,
        *,
        card_type: str = "resident",
        token: str = "",
    ) -> dict[str, Any]:
        """``POST /v1/verify`` as plain JSON, checked against the API (tools and tests)."""
        body = self._verify_body(tap_id, kind, id_number, card_type, token)
        answer = await self.post("/v1/verify", body, timeout_s)
        checked(answer, wire.VerifyResponse, "/v1/verify")
        return answer

    async def lookup(
        self,
        tap_id: str,
        kind: str,
        id_number: str,
        timeout_s: float,
        *,
        card_type: str = "resident",
        token: str = "",
    ) -> wire.VerifyResponse:
        """``POST /v1/verify`` as the typed answer the verifier decides with."""
        body = self._verify_body(tap_id, kind, id_number, card_type, token)
        return checked(
            await self.post("/v1/verify", body, timeout_s), wire.VerifyResponse, "/v1/verify"
        )

    @staticmethod
    def _verify_body(
        tap_id: str, kind: str, id_number: str, card_type: str, token: str
    ) -> dict[str, Any]:
        credential: wire.Credential
        if kind == "qr":
            credential = wire.QrCredential(token)
        else:
            typed = None if card_type == "resident" else cast(wire.CardType, card_type)
            shape = wire.SsCardCredential if kind == "ss_card" else wire.IdCardCredential
            credential = shape(id_number, typed)
        body: dict[str, Any] = msgspec.to_builtins(wire.VerifyRequest(tap_id, credential))
        return body

    async def claim_pass(self, nonce: str, expires_at: int, timeout_s: float) -> None:
        """``POST /v1/passes/claim``: make a pass accepted here unusable at every other kiosk.

        Returns when the claim is this kiosk's; :class:`ServerRejected` ``409 replay`` when
        the pass was already used elsewhere; :class:`ServerUnavailable` as for any call.
        """
        body = msgspec.to_builtins(wire.PassClaim(nonce, expires_at))
        answer = await self.post("/v1/passes/claim", body, timeout_s)
        checked(answer, wire.PassClaimAnswer, "/v1/passes/claim")

    async def upload(self, events: list[dict[str, Any]], timeout_s: float = 10.0) -> dict[str, Any]:
        """``POST /v1/audit``; the acknowledgement is checked before anything is deleted."""
        answer = await self.post("/v1/audit", {"events": events}, timeout_s)
        checked(answer, wire.AuditAck, "/v1/audit")
        return answer

    async def heartbeat(self, status: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
        """Report health; the answer's fleet configuration is kept and announced on change."""
        # to the millisecond: a whole second would report 0-1 s of skew that is not there
        sent_at = round(self._wall_clock(), 3)
        answer = await self.post("/v1/heartbeat", {**status, "sent_at": sent_at}, timeout_s)
        typed = checked(answer, wire.HeartbeatAnswer, "/v1/heartbeat")
        if typed.config_version != self.config_version:
            self.config_version, self.config = typed.config_version, typed.config
            log.info("fleet configuration version %d received", typed.config_version)
            if self.on_config is not None:
                self.on_config(typed.config_version, typed.config)
        if not isinstance(typed.clock_skew_s, msgspec.UnsetType):
            self.clock_skew_s = typed.clock_skew_s
        if not isinstance(typed.update, msgspec.UnsetType) and self.on_update is not None:
            self.on_update(typed.update)
        return answer

    def own_path(self, url: str) -> str:
        """The path of ``url`` on this server; ValueError for any other host, so the session
        token (and the kiosk's trust) never goes anywhere the server merely names."""
        if url.startswith(self._base + "/"):
            url = url[len(self._base) :]
        if not url.startswith("/") or url.startswith("//"):
            raise ValueError(f"{url[:80]!r} is not on this kiosk's server")
        return url

    async def fetch_chunks(self, url: str, sink: ChunkSink, timeout_s: float) -> None:
        """GET ``url`` (on this server) with the session, handing the body to ``sink`` in
        chunks as it arrives (a release is never held in memory whole); ``sink`` may raise
        to stop. A refused session is renewed and the download started again once."""
        path = self.own_path(url)
        self._check_busy(path)
        try:
            async with asyncio.timeout(timeout_s):
                for attempt in (0, 1):
                    token = await self._bearer()
                    status = await self._stream(path, token, sink)
                    if status == 401 and attempt == 0 and self._identity is not None:
                        self._token = None
                        continue
                    if status != 200:
                        raise ServerRejected(status, "download_refused", f"{path}: {status}")
                    return
        except TimeoutError as exc:
            raise ServerUnavailable(f"{path}: not downloaded within {timeout_s:.0f} s") from exc

    async def _stream(self, path: str, token: str, sink: ChunkSink) -> int:
        """One streamed GET: the status, and the body through ``sink`` when it is 200."""
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with self._get_session().get(self._base + path, headers=headers) as resp:
                if resp.status in (429, 503):
                    # The download slots are full, not the server: say when to retry, but
                    # do not hold back taps and heartbeats as a busy JSON answer does.
                    wait = _retry_after(resp.headers) * (1.0 + RETRY_JITTER * random.random())
                    raise ServerUnavailable(f"{path}: downloads busy ({resp.status})", wait)
                if resp.status >= 500:
                    raise ServerUnavailable(f"{path}: server error {resp.status}")
                if resp.status != 200:
                    return resp.status
                async for chunk in resp.content.iter_chunked(1 << 16):
                    await sink(chunk)
                return 200
        except ServerUnavailable:
            raise  # already says what happened (it is an OSError too)
        except aiohttp.ClientError as exc:
            raise ServerUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise ServerUnavailable(f"{path}: {exc}") from exc
