"""Hostile and malformed requests get clean errors and leave no traceback in the log
(issue 10, part 7): bad input is one line, tracebacks are for bugs."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

RAW_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"b" * 10000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
    b'POST /v1/admin/login HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{"user',  # cut
    b"POST /v1/admin/devices HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
    b"Content-Length: 4\r\n\r\nnope",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello on plain HTTP
]


async def send_raw(client: TestClient, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 15)
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def send_and_vanish(client: TestClient, path: str, headers: dict[str, str]) -> None:
    """A request whose client disconnects before the answer."""
    _, writer = await asyncio.open_connection(client.host, client.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    body = json.dumps({"tap_id": "t-gone", "credential": {"kind": "qr", "token": "x"}}).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.transport.abort()


async def test_hostile_requests_leave_no_traceback(
    client: TestClient, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for data in RAW_REQUESTS:
        await send_raw(client, data)
    for path in ("/v1/verify", "/v1/audit", "/v1/heartbeat", "/v1/admin/login", "/v1/session"):
        await send_and_vanish(client, path, auth)
    bodies: list[Any] = [b"", b"\xff\xfe", b"[]", b"null", b"{" * 5000, b'{"a": 1e999}', b'"x"']
    for path in (
        "/v1/verify",
        "/v1/audit",
        "/v1/heartbeat",
        "/v1/session/challenge",
        "/v1/session",
        "/v1/enrol",
        "/v1/admin/login",
        "/v1/admin/devices",
    ):
        for body in bodies:
            resp = await client.post(path, data=body, headers=auth)
            assert resp.status < 500, (path, body[:20])
    await asyncio.sleep(0.3)
    with_traceback = [r for r in caplog.records if r.exc_info or r.stack_info]
    assert not with_traceback, [(r.name, r.getMessage()) for r in with_traceback]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
