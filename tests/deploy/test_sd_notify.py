"""core.systemd against a real notify socket: what systemd would receive, and when not.

The socket is bound by the test and named in ``$NOTIFY_SOCKET`` exactly as systemd does it
(a path, or ``@name`` in the abstract namespace).
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import systemd


@pytest.fixture(autouse=True)
def _no_systemd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets what it needs: none of a surrounding service's variables leak in."""
    for name in ("NOTIFY_SOCKET", "SYSTEMD_EXEC_PID", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket on a short path (sun_path holds 108 bytes) named in NOTIFY_SOCKET."""
    with tempfile.TemporaryDirectory(prefix="sdn") as folder:
        path = str(Path(folder) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(5.0)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("SYSTEMD_EXEC_PID", str(os.getpid()))
        try:
            yield sock
        finally:
            sock.close()


def _lines(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_stopping_status_arrive_as_assignments(notify_socket: socket.socket) -> None:
    assert systemd.notify_ready("listening on\n0.0.0.0:8443")
    assert _lines(notify_socket) == ["READY=1", "STATUS=listening on 0.0.0.0:8443"]
    assert systemd.notify_status("3 taps queued")
    assert _lines(notify_socket) == ["STATUS=3 taps queued"]
    assert systemd.notify_stopping()
    assert _lines(notify_socket) == ["STOPPING=1"]


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"siheyi-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify_watchdog()
        assert sock.recv(64) == b"WATCHDOG=1"


def test_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert not systemd.notify_ready()
    assert systemd.watchdog_interval() is None
    asyncio.run(asyncio.wait_for(systemd.watchdog_loop(), 5.0))  # returns at once


def test_a_child_of_the_main_process_stays_quiet(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked worker inherits NOTIFY_SOCKET; under NotifyAccess=main only the main process
    (SYSTEMD_EXEC_PID) may speak."""
    monkeypatch.setenv("SYSTEMD_EXEC_PID", str(os.getpid() + 1))
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert not systemd.notify_ready()
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("SYSTEMD_EXEC_PID", str(os.getpid()))
    assert systemd.notify_ready()
    assert notify_socket.recv(64) == b"READY=1"


def test_a_gone_socket_is_not_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not systemd.notify_ready()


def test_watchdog_interval_is_half_of_watchdog_usec(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert systemd.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert systemd.watchdog_interval() is None


def _drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(64)
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5.0)


def test_a_blocked_event_loop_stops_the_pings(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pings come from the loop itself: while a coroutine blocks it, none arrive; once
    it lets go they resume. (A pinging thread would fail the middle assertion.)"""
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # a ping every 10 ms
    hang, hanging, release, stop = (threading.Event() for _ in range(4))

    async def main() -> None:
        pings = asyncio.create_task(systemd.watchdog_loop())
        while not stop.is_set():
            await asyncio.sleep(0.005)
            if hang.is_set() and not hanging.is_set():
                hanging.set()
                release.wait(10.0)  # a hang: a blocking call on the event loop
        pings.cancel()

    loop_thread = threading.Thread(target=asyncio.run, args=(main(),))
    loop_thread.start()
    try:
        assert notify_socket.recv(64) == b"WATCHDOG=1"
        hang.set()
        assert hanging.wait(5.0)
        _drain(notify_socket)  # pings sent before the hang began
        notify_socket.settimeout(0.3)
        with pytest.raises(TimeoutError):
            notify_socket.recv(64)
        release.set()
        notify_socket.settimeout(5.0)
        assert notify_socket.recv(64) == b"WATCHDOG=1"
    finally:
        release.set()
        stop.set()
        loop_thread.join(10.0)
    assert not loop_thread.is_alive()
