"""``GET /v1/device/releases/{version}/wheel``: the kiosk's session, and only the release
its layer offers it now."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.releases.support import (
    Client,
    add_kiosks,
    beat,
    post_release,
    tokens,
    upload_body,
    wheel_data,
)

WHEEL = wheel_data("1.5.0", bytes(range(256)) * 4000)  # 1 MB: several chunks
OTHER = wheel_data("1.6.0")


async def test_an_offered_kiosk_downloads_the_exact_wheel(
    client: Client, admin: dict[str, str], db_path: Any
) -> None:
    await post_release(client, admin, upload_body("1.5.0", WHEEL))
    await post_release(client, admin, upload_body("1.6.0", OTHER))
    kiosk, other_site = add_kiosks(db_path, "site-a", 1) + add_kiosks(db_path, "site-b", 1)
    auth = tokens(db_path, [kiosk, other_site])
    path = "/v1/device/releases/1.5.0/wheel"
    assert (await client.get(path, headers=auth[kiosk])).status == 403  # no rollout yet
    body = {"version": "1.5.0", "scope": "site", "target": "site-a", "waves": [100]}
    await client.post("/v1/admin/rollouts", json=body, headers=admin)
    offer = await beat(client, auth[kiosk], "1.4.0")
    assert offer is not None and offer["url"] == path
    resp = await client.get(offer["url"], headers=auth[kiosk])
    assert resp.status == 200
    data = await resp.read()
    assert len(data) == offer["size"] and hashlib.sha256(data).hexdigest() == offer["sha256"]
    assert resp.headers["Content-Type"] == "application/octet-stream"
    again = await client.get(path, headers=auth[kiosk])  # from this process's copy
    assert await again.read() == WHEEL


async def test_others_get_nothing(client: Client, admin: dict[str, str], db_path: Any) -> None:
    await post_release(client, admin, upload_body("1.5.0", WHEEL))
    await post_release(client, admin, upload_body("1.6.0", OTHER))
    kiosk, other_site = add_kiosks(db_path, "site-a", 1) + add_kiosks(db_path, "site-b", 1)
    auth = tokens(db_path, [kiosk, other_site])
    body = {"version": "1.5.0", "scope": "site", "target": "site-a", "waves": [100]}
    started = await (await client.post("/v1/admin/rollouts", json=body, headers=admin)).json()
    path = "/v1/device/releases/1.5.0/wheel"
    assert (await client.get(path)).status == 401
    assert (await client.get(path, headers=admin)).status == 401  # a person is no kiosk
    assert (await client.get(path, headers=auth[other_site])).status == 403
    resp = await client.get("/v1/device/releases/1.6.0/wheel", headers=auth[kiosk])
    assert resp.status == 403 and (await resp.json())["error"] == "not_offered"
    await client.post(f"/v1/admin/rollouts/{started['id']}/halt", headers=admin)
    assert (await client.get(path, headers=auth[kiosk])).status == 403
