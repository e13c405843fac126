"""A flood of idle connections against ``kiosk server run`` with a low file limit (issue 10,
part 7): a kiosk still verifies, the idle sockets are dropped, and the log stays short."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from provisioning.registry import add_device
from server.fleet.sessions import mint_token
from server.storage.db import connect
from siheyi.cli import local_fleet

pytestmark = pytest.mark.slow

FILE_LIMIT = 256
IDLE = 600  # well beyond the limit: the old server stopped accepting at ~250


def _low_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)


def _verify(port: int, token: str) -> int:
    body = {
        "tap_id": "t-flood",
        "credential": {"kind": "id_card", "id_number": "11010519491231002X"},
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/verify",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(resp.status)


def test_idle_connection_flood_does_not_shut_out_kiosks(tmp_path: Path) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE + 100:
        pytest.skip(f"this process may open only {soft} files")
    db = tmp_path / "siheyi.db"
    device = add_device(local_fleet(None, db), "SN-F", "site-a")
    with connect(db) as conn:
        token = mint_token(conn, device.device_id)
    config = tmp_path / "siheyi.toml"
    config.write_text(
        f'[server]\ndatabase = "{db}"\n[limits]\nheader_timeout_s = 2\nfd_reserve = 64\n'
    )
    port = _free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "siheyi.cli",
                "server",
                "run",
                "--config",
                str(config),
                "--port",
                str(port),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_low_file_limit,
        )
    idle: list[socket.socket] = []
    try:
        _wait_listening(port)
        for n in range(IDLE):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if n % 3 == 0:
                sock.sendall(b"POST /v1/verify HTTP/1.1\r\nHost: x\r\n")  # never finished
            idle.append(sock)
        time.sleep(0.5)
        assert _verify(port, token) == 200
        time.sleep(3)  # beyond header_timeout_s: whatever is left is dropped
        closed = 0
        for sock in idle:
            sock.settimeout(2)
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == IDLE
    finally:
        for sock in idle:
            sock.close()
        server.terminate()
        server.wait(timeout=15)
    lines = log_path.read_text().splitlines()
    assert not [x for x in lines if "Traceback" in x or "Too many open files" in x]
    assert 1 <= len([x for x in lines if "connection flood" in x]) <= 3
    assert len(lines) < 20, lines
