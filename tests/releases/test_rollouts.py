"""Rollouts through the API and the heartbeat: layering fleet < site < device, offers only to
kiosks of open waves and never again after a failure, halting by itself, advancing, resume
and cancel."""

from __future__ import annotations

from typing import Any

import pytest

from server.releases.waves import percentile
from server.storage.db import connect
from tests.releases.support import Client, add_kiosks, beat, tokens, upload_body, wheel_data

Headers = dict[str, str]


async def publish(client: Client, admin: Headers, *versions: str) -> None:
    for version in versions:
        body = upload_body(version, wheel_data(version))
        resp = await client.post("/v1/admin/releases", json=body, headers=admin)
        assert resp.status == 200, await resp.text()


async def rollout(client: Client, admin: Headers, **body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/admin/rollouts", json=body, headers=admin)
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def status(client: Client, admin: Headers, rollout_id: int) -> dict[str, Any]:
    resp = await client.get(f"/v1/admin/rollouts/{rollout_id}", headers=admin)
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def offered(client: Client, auth: dict[str, Headers], running: str) -> dict[str, str]:
    """device id → the version each kiosk (running ``running``) is offered, if any."""
    out = {}
    for device_id, headers in auth.items():
        offer = await beat(client, headers, running)
        if offer is not None:
            out[device_id] = offer["version"]
    return out


async def test_layers_fleet_site_device(client: Client, admin: Headers, db_path: Any) -> None:
    await publish(client, admin, "1.4.0", "1.5.0", "1.6.0", "1.4.1")
    a = add_kiosks(db_path, "site-a", 3)
    b = add_kiosks(db_path, "site-b", 2)
    auth = tokens(db_path, a + b)
    assert await offered(client, auth, "1.3.0") == {}
    fleet = await rollout(client, admin, version="1.4.0", waves=[100])
    assert await offered(client, auth, "1.3.0") == dict.fromkeys(a + b, "1.4.0")
    await rollout(client, admin, version="1.5.0", scope="site", target="site-a", waves=[100])
    await rollout(client, admin, version="1.6.0", scope="device", target=a[0])
    expected = {a[0]: "1.6.0", a[1]: "1.5.0", a[2]: "1.5.0", b[0]: "1.4.0", b[1]: "1.4.0"}
    assert await offered(client, auth, "1.3.0") == expected
    newer = await rollout(client, admin, version="1.4.1", waves=[100])
    assert (await offered(client, auth, "1.3.0"))[b[0]] == "1.4.1"
    old = await status(client, admin, fleet["id"])
    assert (
        old["state"] == "cancelled" and old["halted_reason"] == f"replaced by rollout {newer['id']}"
    )
    offer = await beat(client, auth[b[1]], "1.3.0")
    assert offer is not None
    assert offer["url"] == "/v1/device/releases/1.4.1/wheel" and offer["size"] == len(
        wheel_data("1.4.1")
    )
    assert await beat(client, auth[b[1]], "1.4.1") is None  # runs it already


async def test_a_halted_or_cancelled_layer_offers_nothing_and_hands_nobody_on(
    client: Client, admin: Headers, db_path: Any
) -> None:
    await publish(client, admin, "1.4.0", "1.5.0")
    a = add_kiosks(db_path, "site-a", 2)
    auth = tokens(db_path, a)
    await rollout(client, admin, version="1.4.0", waves=[100])
    site = await rollout(client, admin, version="1.5.0", scope="site", target="site-a", waves=[100])
    assert await offered(client, auth, "1.3.0") == dict.fromkeys(a, "1.5.0")
    resp = await client.post(f"/v1/admin/rollouts/{site['id']}/halt", headers=admin)
    assert (await resp.json())["state"] == "halted"
    assert await offered(client, auth, "1.3.0") == {}  # not the fleet's 1.4.0 either
    resp = await client.post(f"/v1/admin/rollouts/{site['id']}/resume", headers=admin)
    assert (await resp.json())["state"] == "running"
    assert await offered(client, auth, "1.3.0") == dict.fromkeys(a, "1.5.0")
    resp = await client.post(f"/v1/admin/rollouts/{site['id']}/cancel", headers=admin)
    assert (await resp.json())["state"] == "cancelled"
    assert await offered(client, auth, "1.3.0") == {}
    resp = await client.post(f"/v1/admin/rollouts/{site['id']}/resume", headers=admin)
    assert resp.status == 409


async def test_only_kiosks_of_open_waves_are_offered(
    client: Client, admin: Headers, db_path: Any
) -> None:
    await publish(client, admin, "1.5.0")
    ids = add_kiosks(db_path, "site-a", 30)
    auth = tokens(db_path, ids)
    started = await rollout(client, admin, version="1.5.0", waves=[40, 100], soak_s=3600)
    first = {d for d in ids if percentile(started["id"], d) < 40}
    assert 0 < len(first) < len(ids)
    assert set(await offered(client, auth, "1.4.0")) == first
    found = await status(client, admin, started["id"])
    assert [w["offered"] for w in found["wave_status"]] == [len(first), 0]
    assert [w["kiosks"] for w in found["wave_status"]] == [len(first), len(ids) - len(first)]
    assert found["versions"] == {"site-a": {"1.4.0": len(ids)}}


async def test_failures_halt_the_wave_and_are_never_offered_again(
    client: Client, admin: Headers, db_path: Any
) -> None:
    await publish(client, admin, "1.5.0")
    ids = add_kiosks(db_path, "site-a", 30)
    auth = tokens(db_path, ids)
    started = await rollout(client, admin, version="1.5.0", waves=[50, 100], failure_threshold=0.3)
    first = sorted(d for d in ids if percentile(started["id"], d) < 50)
    assert len(first) >= 6
    assert set(await offered(client, auth, "1.4.0")) == set(first)  # every kiosk online
    for device_id in first[:3]:
        await beat(client, auth[device_id], "1.5.0", {"version": "1.5.0", "state": "committed"})
    bad = first[3]
    failed = {"version": "1.5.0", "state": "failed", "detail": "doctor: audio fault"}
    assert await beat(client, auth[bad], "1.4.0", failed) is None  # 1 of 4: 25 % ≤ 30 %
    assert (await status(client, admin, started["id"]))["state"] == "running"
    rolled = {"version": "1.5.0", "state": "rolled_back"}
    await beat(client, auth[first[4]], "1.4.0", rolled)  # 2 of 5: 40 % > 30 %: halts at once
    found = await status(client, admin, started["id"])
    assert found["state"] == "halted" and "2 of 5" in found["halted_reason"]
    assert found["wave_status"][0]["failed"] == 1 and found["wave_status"][0]["rolled_back"] == 1
    assert found["wave_status"][0]["committed"] == 3
    assert await offered(client, auth, "1.4.0") == {}
    await client.post(f"/v1/admin/rollouts/{started['id']}/resume", headers=admin)
    after = await offered(client, {d: auth[d] for d in first[3:]}, "1.4.0")
    assert set(after) == set(first[5:])  # the two that failed are not offered 1.5.0 again
    assert await beat(client, auth[bad], "1.4.0") is None  # nor without a report


async def test_a_failure_the_kiosk_will_retry_is_no_verdict_on_the_release(
    client: Client, admin: Headers, db_path: Any
) -> None:
    """An interrupted download or a full disk (``retry``) neither halts a good rollout nor
    stops the offer; the same failure without ``retry`` does both."""
    await publish(client, admin, "1.5.0")
    ids = add_kiosks(db_path, "site-a", 4)
    auth = tokens(db_path, ids)
    started = await rollout(client, admin, version="1.5.0", waves=[100], failure_threshold=0.3)
    first, second, *rest = ids
    full = {"version": "1.5.0", "state": "failed", "detail": "disk: 20 MB free", "retry": True}
    assert await beat(client, auth[first], "1.4.0", full) is not None  # offered again
    assert await beat(client, auth[second], "1.4.0", full) is not None
    assert await beat(client, auth[first], "1.4.0") is not None  # and at the next beat
    found = await status(client, admin, started["id"])  # 2 of 2 "failed": would halt
    assert found["state"] == "running" and found["wave"] == 0
    assert (found["wave_status"][0]["failed"], found["wave_status"][0]["offered"]) == (0, 4)
    with connect(db_path) as conn:
        row = conn.execute("SELECT retry FROM kiosk_updates WHERE device_id = ?", (first,))
        assert row.fetchone()[0] == 1
    for device_id in rest:  # every other kiosk committed: the retrying ones hold the wave
        await beat(client, auth[device_id], "1.5.0", {"version": "1.5.0", "state": "committed"})
    assert (await status(client, admin, started["id"]))["state"] == "running"
    final = {**full, "retry": False}
    assert await beat(client, auth[first], "1.4.0", final) is None  # a verdict now
    with connect(db_path) as conn:
        row = conn.execute("SELECT retry FROM kiosk_updates WHERE device_id = ?", (first,))
        assert row.fetchone()[0] == 0  # written on change of retry alone
    found = await status(client, admin, started["id"])
    assert found["state"] == "running"  # 1 of 4 failed: 25 % ≤ 30 %; second still retries
    assert await beat(client, auth[second], "1.4.0", final) is None
    found = await status(client, admin, started["id"])
    assert found["state"] == "halted" and "2 of 4" in found["halted_reason"]


async def test_waves_advance_once_every_online_kiosk_runs_the_version(
    client: Client, admin: Headers, db_path: Any
) -> None:
    await publish(client, admin, "1.5.0")
    ids = add_kiosks(db_path, "site-a", 30)
    auth = tokens(db_path, ids)
    started = await rollout(client, admin, version="1.5.0", waves=[50, 100])
    first = sorted(d for d in ids if percentile(started["id"], d) < 50)
    online = first[1:]  # first[0] never beats: offline kiosks do not hold the wave back
    assert set(await offered(client, {d: auth[d] for d in online}, "1.4.0")) == set(online)
    for device_id in online[:-1]:
        await beat(client, auth[device_id], "1.5.0", {"version": "1.5.0", "state": "committed"})
    await beat(client, auth[online[-1]], "1.5.0", {"version": "1.5.0", "state": "trial"})
    assert (await status(client, admin, started["id"]))["wave"] == 0  # one still in trial
    await beat(client, auth[online[-1]], "1.5.0", {"version": "1.5.0", "state": "committed"})
    found = await status(client, admin, started["id"])
    assert (found["wave"], found["state"]) == (1, "running")
    rest = [d for d in ids if d not in first]
    assert set(await offered(client, {d: auth[d] for d in rest}, "1.4.0")) == set(rest)
    for device_id in rest:
        await beat(client, auth[device_id], "1.5.0")
    found = await status(client, admin, started["id"])
    assert found["state"] == "done" and found["ended_at"]
    assert found["versions"]["site-a"]["1.5.0"] == len(ids) - 1


async def test_soak_keeps_a_wave_open(client: Client, admin: Headers, db_path: Any) -> None:
    await publish(client, admin, "1.5.0")
    ids = add_kiosks(db_path, "site-a", 4)
    auth = tokens(db_path, ids)
    started = await rollout(client, admin, version="1.5.0", waves=[50, 100], soak_s=3600)
    for headers in auth.values():
        await beat(client, headers, "1.5.0")
    assert (await status(client, admin, started["id"]))["wave"] == 0


@pytest.mark.parametrize(
    ("body", "status_code"),
    [
        ({"version": "9.9.9"}, 404),
        ({"version": "1.5.0", "scope": "site", "target": "nowhere"}, 404),
        ({"version": "1.5.0", "scope": "site"}, 400),
        ({"version": "1.5.0", "waves": [10, 50]}, 400),
        ({"version": "1.5.0", "failure_threshold": 1.5}, 400),
        ({"version": "1.5.0", "scope": "site", "target": "a\u0000b"}, 400),
        ({"version": "1.5\u00000"}, 400),
    ],
)
async def test_bad_rollouts_are_refused(
    client: Client, admin: Headers, body: dict[str, Any], status_code: int
) -> None:
    await publish(client, admin, "1.5.0")
    resp = await client.post("/v1/admin/rollouts", json=body, headers=admin)
    assert resp.status == status_code, await resp.text()
    assert (await client.get("/v1/admin/rollouts/77", headers=admin)).status == 404
    assert (await client.post("/v1/admin/rollouts/77/halt", headers=admin)).status == 404


async def test_an_unknown_version_names_the_api_call_not_a_cli_verb(
    client: Client, admin: Headers
) -> None:
    resp = await client.post("/v1/admin/rollouts", json={"version": "9.9.9"}, headers=admin)
    assert resp.status == 404
    detail = (await resp.json())["detail"]
    assert "POST /v1/admin/releases" in detail and "kiosk" not in detail, detail
