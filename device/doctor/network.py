"""Checks of the way to the server: reachable, TLS pin, session, and the clock against it.

They run in that order, each using what the previous found: a server that does not accept a
connection has no certificate to check, and a kiosk without a session has a problem a second
failure line would only repeat (those are reported as warnings "not checked", see
docs/doctor.md). Every network wait is bounded by the per-check time limit.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from device.doctor.context import DoctorContext
from device.doctor.model import CheckResult, fail, not_configured, ok, warn
from device.errors import ServerRejected, ServerUnavailable
from device.link.client import ServerClient, tls_context
from device.link.identity import DeviceIdentity

_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


async def _healthz(ctx: DoctorContext, ssl_arg: ssl.SSLContext | bool) -> tuple[int, str]:
    """GET /healthz: (status, Date header)."""
    timeout = aiohttp.ClientTimeout(total=ctx.timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(ctx.server_url.rstrip("/") + "/healthz", ssl=ssl_arg) as resp,
    ):
        await resp.read()
        return resp.status, resp.headers.get("Date", "")


async def check_server(ctx: DoctorContext) -> CheckResult:
    """The server accepts a connection and answers ``/healthz`` (certificate not judged
    here: that is the tls check, so a wrong pin is not mistaken for a network outage)."""
    if ctx.bundle is None:
        return warn("server", "not checked: no bundle (see config)")
    url = ctx.server_url
    host, port = _host_port(url)
    fix = (
        f"check the network (`ping {host}`), that the server runs (`systemctl status "
        "siheyi-server` there) and server_url / the bundle's server URL"
    )
    try:
        async with asyncio.timeout(ctx.timeout_s):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
    except (OSError, TimeoutError) as exc:
        ctx.server_up = False
        why = "no answer" if isinstance(exc, TimeoutError) else str(exc)
        return fail("server", f"cannot connect to {host}:{port}: {why}", fix)
    try:
        status, date = await _healthz(ctx, False)
        received = ctx.probes.wall_clock()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        ctx.server_up = False
        return fail("server", f"{url}/healthz: {type(exc).__name__}: {exc}", fix)
    if status != 200:
        ctx.server_up = False
        return fail("server", f"{url}/healthz answered {status}", fix)
    ctx.server_up = True
    if date:
        ctx.server_offset_s = email.utils.parsedate_to_datetime(date).timestamp() - received
    return ok("server", f"{url} answers /healthz")


async def check_tls(ctx: DoctorContext) -> CheckResult:
    """An https server's certificate chains to the fleet CA the bundle pins."""
    url = ctx.server_url
    if ctx.bundle is None or not ctx.server_up:
        return warn("tls", "not checked: the server is not reachable (see server)")
    host, _ = _host_port(url)
    if url.startswith("http://"):
        if host.startswith(_LOOPBACK):
            return not_configured("tls", "not configured: plain HTTP on loopback")
        return warn(
            "tls",
            f"{url} is plain HTTP: lookups and audit cross the network unencrypted",
            "serve HTTPS and provision the fleet CA (kiosk provision init --tls-ca CA.pem), "
            "then re-provision the kiosk",
        )
    pinned = tls_context(ctx.bundle.tls_ca)
    try:
        await _healthz(ctx, pinned if pinned is not None else True)
    except aiohttp.ClientConnectorCertificateError as exc:
        what = "the pinned fleet CA" if pinned is not None else "the system's CAs"
        return fail(
            "tls",
            f"{host}'s certificate is not trusted by {what}: {exc.certificate_error}",
            "the server presents a certificate the bundle's fleet CA did not sign: install the "
            "right certificate on the server, or re-provision the kiosk with the fleet CA "
            "(kiosk provision init --tls-ca CA.pem, kiosk provision add --rekey)",
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return fail("tls", f"TLS to {host}: {type(exc).__name__}: {exc}", "see server")
    if pinned is None:
        return warn(
            "tls",
            f"{host}'s certificate is trusted by the system's CAs; the bundle pins no fleet CA",
            "provision the fleet CA (kiosk provision init --tls-ca CA.pem) and re-provision",
        )
    return ok("tls", f"{host}'s certificate chains to the pinned fleet CA")


_REFUSALS = {
    "revoked": "the kiosk is revoked: provision it again (kiosk provision add SERIAL --rekey)"
    " if it should serve",
    "quarantined": "the kiosk is quarantined: an admin releases it on the server",
    "bad_signature": "the server does not accept this kiosk's key: re-provision "
    "(kiosk provision add SERIAL --rekey) or enrol again (kiosk device enrol)",
    "unknown_device": "the server does not know this kiosk: provision it (kiosk provision add)",
}


async def check_session(ctx: DoctorContext) -> CheckResult:
    """The kiosk's key gets a session, as the agent's first request would."""
    if ctx.bundle is None or not ctx.server_up:
        return warn("session", "not checked: the server is not reachable (see server)")
    b = ctx.bundle
    identity = DeviceIdentity.from_bundle(b.device_id, b.private_key, Path(ctx.config.bundle))
    client = ServerClient(ctx.server_url, identity, tls_ca=b.tls_ca)
    try:
        async with asyncio.timeout(ctx.timeout_s):
            await client.authenticate(force=True)
    except ServerRejected as exc:
        fix = _REFUSALS.get(exc.error, "see the server's log for the refusal")
        return fail("session", f"session refused: {exc}", fix)
    except (ServerUnavailable, TimeoutError) as exc:
        return fail("session", f"no session: {exc or 'no answer in time'}", "see server and tls")
    finally:
        await client.close()
    return ok("session", f"device {b.device_id} signed in (session token obtained)")


async def check_clock(ctx: DoctorContext) -> CheckResult:
    """NTP state (systemd), and the server's clock when it answered."""
    tolerance = ctx.config.verify.clock_tolerance_s
    ntp = await ctx.blocking(ctx.probes.ntp)
    offset = ctx.server_offset_s
    fix = "sudo timedatectl set-ntp true; `timedatectl timesync-status` shows the NTP server"
    against = f"; server clock differs by {round(offset):+d} s" if offset is not None else ""
    if offset is not None and abs(offset) > tolerance:
        return fail(
            "clock",
            f"the clock differs from the server's by {offset:+.0f} s "
            f"(more than verify.clock_tolerance_s = {tolerance:.0f})",
            fix,
        )
    if ntp is True:
        return ok("clock", "NTP synchronised" + against)
    if ntp is None:
        return warn("clock", "NTP state unknown (no timedatectl or no systemd)" + against, fix)
    if offset is not None:
        return warn("clock", "NTP not synchronised; the server's clock agrees" + against, fix)
    return fail("clock", "NTP not synchronised and the server's time is unavailable", fix)
