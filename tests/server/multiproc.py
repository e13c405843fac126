"""Real ``kiosk server run`` processes for the tests of state shared across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.pgserver import free_port

KIOSK = [sys.executable, "-m", "siheyi.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
START_TIMEOUT_S = 30.0


@dataclass
class ServerProcess:
    """One ``kiosk server run`` (which may itself supervise workers)."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start(
    database: Path | str, workdir: Path, *extra: str, port: int | None = None
) -> ServerProcess:
    """Start a server on a free port (not waiting for it: see :func:`wait_ready`)."""
    port = port or free_port()
    log = workdir / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*KIOSK, "server", "run", "--database", str(database), "--port", str(port), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
    return ServerProcess(process, f"http://127.0.0.1:{port}", log)


async def wait_ready(server: ServerProcess) -> None:
    """Until ``/healthz`` answers 200; fails with the server's output otherwise."""
    deadline = time.monotonic() + START_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while True:
            assert server.process.poll() is None, f"server exited:\n{server.output()}"
            try:
                async with session.get(server.url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, f"server did not start:\n{server.output()}"
            time.sleep(0.1)


def stop(server: ServerProcess, timeout_s: float = 20.0) -> int:
    """SIGTERM, then wait; the exit status."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        raise AssertionError(f"server did not stop on SIGTERM:\n{server.output()}") from None


@contextmanager
def servers(
    database: Path | str, workdir: Path, count: int, *extra: str
) -> Iterator[list[ServerProcess]]:
    """``count`` separate server processes on one database, stopped at the end."""
    started = [start(database, workdir, *extra) for _ in range(count)]
    try:
        yield started
    finally:
        for server in started:
            stop(server)


def children(pid: int) -> set[int]:
    """The process ids whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid …: comm may hold spaces, so split after the last ")"
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found
