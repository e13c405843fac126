"""``kiosk server run`` under a notify socket, as systemd runs it (Type=notify, WatchdogSec,
NotifyAccess=main): READY once it accepts connections, watchdog pings from its loop,
STOPPING on SIGTERM; with ``--workers N`` the supervisor says all of it and the workers,
which inherit the socket, stay quiet."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgserver import free_port


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    with tempfile.TemporaryDirectory(prefix="sdn") as folder:
        path = str(Path(folder) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(30.0)
            yield sock, path


def _start(path: str, database: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """The server as systemd's main process: SYSTEMD_EXEC_PID is its own pid (exec keeps it)."""
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    env.pop("WATCHDOG_PID", None)
    command = [sys.executable, "-m", "siheyi.cli", "server", "run", "--database", str(database)]
    command += ["--port", str(port), *extra]
    script = f"SYSTEMD_EXEC_PID=$$ exec {shlex.join(command)}"
    return subprocess.Popen(
        ["/bin/sh", "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.kill()
        server.wait()


def _wait_listening(port: int) -> None:
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def _messages(sock: socket.socket) -> Iterator[list[str]]:
    while True:
        yield sock.recv(4096).decode().split("\n")


@pytest.mark.parametrize("workers", [1, 2])
def test_server_tells_systemd_ready_pings_and_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str], workers: int
) -> None:
    sock, path = notify_socket
    port = free_port()
    server = _start(path, tmp_path / "s.db", port, "--workers", str(workers))
    try:
        messages = _messages(sock)
        ready = next(messages)
        if workers == 1:
            assert ready == ["READY=1", f"STATUS=listening on 127.0.0.1:{port}"]
        else:
            assert ready == ["READY=1", "STATUS=2 workers"]
        _wait_listening(port)
        # 5 pings (0.5 s) after the port answers: a worker would have said READY by then
        assert [next(messages) for _ in range(5)] == [["WATCHDOG=1"]] * 5
        server.send_signal(signal.SIGTERM)
        assert next(m for m in messages if m != ["WATCHDOG=1"]) == ["STOPPING=1"]
        assert server.wait(timeout=30) == 0
    finally:
        _stop(server)
