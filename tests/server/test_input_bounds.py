"""What docs/api.md promises about device bodies at the edge (issue 14, parts 1 and 4).

A heartbeat over 16 KiB is ``413 too_large`` like any body over its limit; ``sent_at`` is a
plausible unix time or a ``400`` naming it; a session's ``time`` is an integer; the lifetimes
a session hands out are whole seconds, as the doc shows them (``60``, ``900``).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core import wire
from core.signing import session_message
from provisioning.registry import DeviceBundle
from server.fleet import sessions
from server.http.views import MAX_HEARTBEAT_BYTES

Client = TestClient[web.Request, web.Application]


async def test_an_oversized_heartbeat_is_413(client: Client, auth: dict[str, str]) -> None:
    body = {"boot_id": "b", "reader": {"note": "x" * MAX_HEARTBEAT_BYTES}}
    resp = await client.post("/v1/heartbeat", json=body, headers=auth)
    assert resp.status == 413
    answer = await resp.json()
    assert answer["error"] == "too_large"
    assert str(MAX_HEARTBEAT_BYTES) in answer["detail"]


@pytest.mark.parametrize("sent_at", [1_764_000_000, 1_764_000_000.25, 0])
async def test_a_plausible_sent_at_is_taken(
    client: Client, auth: dict[str, str], sent_at: float
) -> None:
    resp = await client.post(
        "/v1/heartbeat", json={"boot_id": "b", "sent_at": sent_at}, headers=auth
    )
    assert resp.status == 200
    assert "clock_skew_s" in await resp.json()


@pytest.mark.parametrize(
    "sent_at",
    [1_764_000_000_000, wire.MAX_SENT_AT + 1, -1, "1764000000", True, [1], {"s": 1}],
)
async def test_an_implausible_sent_at_is_a_400_naming_it(
    client: Client, auth: dict[str, str], sent_at: Any
) -> None:
    resp = await client.post(
        "/v1/heartbeat", json={"boot_id": "b", "sent_at": sent_at}, headers=auth
    )
    assert resp.status == 400
    answer = await resp.json()
    assert answer["error"] == "bad_request"
    assert answer["detail"].startswith("sent_at: ")


async def _challenge(client: Client, device_id: str) -> dict[str, Any]:
    resp = await client.post("/v1/session/challenge", json={"device_id": device_id})
    assert resp.status == 200
    return await resp.json()  # type: ignore[no-any-return]


async def test_a_session_time_with_a_fraction_is_refused(
    client: Client, device: DeviceBundle
) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(device.private_key))
    nonce = (await _challenge(client, device.device_id))["nonce"]
    now = int(sessions.utc_now().timestamp())
    signature = key.sign(session_message(device.device_id, nonce, now, "")).hex()
    body = {"device_id": device.device_id, "nonce": nonce, "time": now + 0.5}
    resp = await client.post("/v1/session", json={**body, "signature": signature})
    assert resp.status == 400
    assert (await resp.json())["detail"].startswith("time: ")


async def test_lifetimes_are_whole_seconds_as_documented(
    client: Client, device: DeviceBundle
) -> None:
    challenge = await _challenge(client, device.device_id)
    assert isinstance(challenge["expires_in"], int)
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(device.private_key))
    now = int(sessions.utc_now().timestamp())
    message = session_message(device.device_id, challenge["nonce"], now, "")
    body = {"device_id": device.device_id, "nonce": challenge["nonce"], "time": now}
    resp = await client.post("/v1/session", json={**body, "signature": key.sign(message).hex()})
    assert resp.status == 200
    raw = await resp.read()
    answer = msgspec.json.decode(raw)
    assert isinstance(answer["expires_in"], int)
    msgspec.json.decode(raw, type=wire.SessionAnswer)  # the kiosk's model still takes it


def test_the_kiosk_still_takes_the_older_servers_float_lifetimes() -> None:
    answer = {"nonce": "n" * 43, "expires_in": 60.0, "server_time": "2026-11-23T08:00:00+00:00"}
    assert msgspec.convert(answer, wire.ChallengeAnswer).expires_in == 60
