"""The uart shim: pyserial backend on CPython, the termios/poll backend under MicroPython."""

from __future__ import annotations

import os
import subprocess
import time
import tty

import pytest

from firmware_bridge.uart import PortGone, open_uart, parse_uart_spec

from .test_micropython import ROOT, micropython_binary


def test_loop_url_roundtrip() -> None:
    port = open_uart("loop://")
    try:
        assert port.read(10) == b"" and port.any() == 0
        assert port.wait(20) is False
        assert port.write(b"\x00abc\x00") == 5
        assert port.wait(200) is True
        assert port.any() == 5
        assert port.read(3) == b"\x00ab"
        assert port.read(100) == b"c\x00"
    finally:
        port.close()


def test_pty_read_write_and_vanish() -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    port = open_uart(os.ttyname(slave))
    os.close(slave)
    try:
        t0 = time.monotonic()
        assert port.wait(50) is False
        assert 0.03 < time.monotonic() - t0 < 0.5
        os.write(master, b"hello")
        assert port.wait(500)
        got = b""
        while len(got) < 5:
            got += port.read(64)
        assert got == b"hello"
        assert port.write(b"back") == 4
        assert os.read(master, 10) == b"back"
        os.close(master)
        master = -1
        with pytest.raises(OSError) as exc:
            port.wait(100)
        assert isinstance(exc.value, PortGone)
        with pytest.raises(OSError):
            port.read(10)
    finally:
        port.close()
        if master >= 0:
            os.close(master)


def test_open_missing_device_is_oserror() -> None:
    with pytest.raises(OSError):
        open_uart("/nonexistent/tty-siheyi")


def test_uart_spec() -> None:
    assert parse_uart_spec("uart:0") == (0, {})
    assert parse_uart_spec("uart:1:tx=4:rx=5") == (1, {"tx": 4, "rx": 5})
    for bad in ("uart", "uart:x", "uart:1:tx", "uart:1:cts=3"):
        with pytest.raises(ValueError):
            parse_uart_spec(bad)
    with pytest.raises(ValueError):
        open_uart("uart:0")  # CPython has no machine.UART


MP_SCRIPT = r"""
import sys
from firmware_bridge.uart import open_uart, PortGone, PosixTty
port = open_uart(sys.argv[1])
assert isinstance(port, PosixTty)
print("T", port.any(), port.read(5), port.wait(30))
sys.stdout.flush() if hasattr(sys.stdout, "flush") else None
assert port.wait(3000)
got = b""
while len(got) < 2000:
    port.wait(1000)
    got += port.read(4096)
print("R", len(got), got == bytes(range(200)) * 10)
print("W", port.write(b"pong"))
try:
    while True:
        port.wait(100)
        port.read(10)
except OSError as e:
    print("GONE", isinstance(e, PortGone))
try:
    port.write(b"x")
    print("WRITE OK")
except OSError:
    print("WRITE GONE")
try:
    open_uart("/nonexistent/tty")
except OSError:
    print("MISSING")
"""


@pytest.mark.micropython
def test_posix_tty_under_micropython() -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    proc = subprocess.Popen(
        [micropython_binary(), "-c", MP_SCRIPT, os.ttyname(slave)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)  # let it open and set raw mode (which flushes pending input)
        os.write(master, bytes(range(200)) * 10)
        t0 = time.monotonic()
        reply = b""
        while b"pong" not in reply and time.monotonic() - t0 < 5:
            reply += os.read(master, 100)
        assert reply == b"pong"
        os.close(slave)
        os.close(master)
        slave = master = -1
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
    assert proc.returncode == 0, err
    lines = out.decode().split("\n")
    assert lines[0] == "T 0 b'' False"
    assert lines[1:6] == ["R 2000 True", "W 4", "GONE True", "WRITE GONE", "MISSING"]
