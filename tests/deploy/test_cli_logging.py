"""``kiosk --log-format json`` and ``SIHEYI_LOG_FILE`` on a real command: JSON lines, as a
log shipper gets them from the units."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.pgserver import free_port


def _run_server(tmp_path: Path, watch: Path, *options: str, **env: str) -> None:
    """``kiosk [options] server run`` with stderr in ``tmp_path/stderr``, until ``watch``
    shows its first log line; then SIGTERM."""
    command = [sys.executable, "-m", "siheyi.cli", *options, "server", "run"]
    command += ["--database", str(tmp_path / "s.db"), "--port", str(free_port())]
    with (tmp_path / "stderr").open("wb") as err:
        server = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **env}
        )
    try:
        deadline = time.monotonic() + 30
        while not watch.exists() or "file limit" not in watch.read_text():
            assert server.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, (tmp_path / "stderr").read_text()
            time.sleep(0.1)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]  # each line: JSON


def test_json_lines_into_the_file_the_environment_names(tmp_path: Path) -> None:
    """``--log-format json`` on the command line, the file from ``$SIHEYI_LOG_FILE`` (as
    /etc/siheyi/server.env would set it); the format variable is tested in test_logsetup."""
    log_file = tmp_path / "server.log"
    _run_server(tmp_path, log_file, "--log-format", "json", SIHEYI_LOG_FILE=str(log_file))
    (limit,) = [r for r in _records(log_file) if "file limit" in str(r["message"])]
    assert limit["level"] == "INFO" and limit["logger"] == "server.http.serving"
    assert (tmp_path / "stderr").read_text() == ""  # all of it went to the file
