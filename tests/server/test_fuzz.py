"""Property test: random bytes and random JSON on every endpoint never give a 5xx."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioning.registry import DeviceBundle
from server.app import create_app
from server.config import ServerConfig

from .conftest import bearer

PATHS = ["/v1/verify", "/v1/audit", "/v1/heartbeat"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**4000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["110101199003074514", "USA110085051234", "2026-11-23T08:00:00+08:00"]),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(max_size=12)
            | st.sampled_from(
                ["events", "seq", "tap_id", "credential", "kind", "id_number", "boot_id", "detail"]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


def _raw(value: Any) -> bytes:
    return json.dumps(value).encode()


bodies = (
    st.binary(max_size=200)
    | json_values.map(_raw)
    | st.text(alphabet='{}[]",:0123456789.eE-+ tfnrue\\', max_size=80).map(str.encode)
    | st.integers(min_value=4300, max_value=6000).map(lambda n: b'{"a": ' + b"7" * n + b"}")
)


def test_random_bodies_never_5xx(config: ServerConfig, device: DeviceBundle, db_path: Path) -> None:
    auth = bearer(db_path, device)
    loop = asyncio.new_event_loop()

    async def start() -> TestClient:
        client = TestClient(TestServer(create_app(config)))
        await client.start_server()
        return client

    client = loop.run_until_complete(start())

    async def post(path: str, body: bytes) -> tuple[int, Any]:
        resp = await client.post(path, data=body, headers=auth)
        text = await resp.text()
        return resp.status, json.loads(text)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(path=st.sampled_from(PATHS), body=bodies)
    def check(path: str, body: bytes) -> None:
        status, doc = loop.run_until_complete(post(path, body))
        assert status < 500, (status, doc)
        assert isinstance(doc, dict)
        if status != 200:
            assert "error" in doc

    try:
        check()
    finally:
        loop.run_until_complete(client.close())
        loop.close()
