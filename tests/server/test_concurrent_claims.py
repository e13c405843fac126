"""Taps at once (within a kiosk's in-flight share): the claims batched in one loop turn all
succeed, and each is refused when sent again."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from .conftest import People


async def test_concurrent_taps_are_all_decided(
    client: TestClient, auth: dict[str, str], people: People
) -> None:
    async def tap(n: int) -> tuple[int, Any]:
        body = {
            "tap_id": f"burst-{n}",
            "credential": {"kind": "id_card", "id_number": people.passing},
        }
        resp = await client.post("/v1/verify", json=body, headers=auth)
        return resp.status, await resp.json()

    answers = await asyncio.gather(*(tap(n) for n in range(12)))
    assert [status for status, _ in answers] == [200] * 12, [a for s, a in answers if s != 200][:3]
    again = await asyncio.gather(*(tap(n) for n in range(5)))
    assert [status for status, _ in again] == [409] * 5
