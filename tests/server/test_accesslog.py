"""The access log (server/http/accesslog.py): one line per request on ``siheyi.access``, with
the device but never a query string, written by the writer thread."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from provisioning.registry import DeviceBundle
from server.app import create_app
from server.config import ServerConfig
from server.http.accesslog import ACCESS_LOGGER, AccessLog, start_access_log

NUMBER = "11010519491231002X"


async def test_one_line_per_request_with_the_device_and_no_query(
    aiohttp_client: Any,
    config: ServerConfig,
    device: DeviceBundle,
    auth: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    writer = start_access_log()
    try:
        server = TestServer(create_app(config))
        await server.start_server(
            access_log_class=AccessLog, access_log=logging.getLogger(ACCESS_LOGGER)
        )
        client: TestClient = await aiohttp_client(server)
        tap = {"tap_id": f"t-{uuid.uuid4().hex[:8]}", "credential": {"kind": "id_card"}}
        tap["credential"]["id_number"] = NUMBER  # type: ignore[index]
        ok = await client.post(f"/v1/verify?who={NUMBER}", json=tap, headers=auth)
        assert ok.status == 200
        assert (await client.get("/healthz")).status == 200
    finally:
        writer.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(lines) == 2
    verify, health = lines
    assert f'127.0.0.1 {device.device_id} "POST /v1/verify" 200 ' in verify
    assert verify.endswith("ms")
    assert '- "GET /healthz" 200 ' in health
    assert NUMBER not in caplog.text
