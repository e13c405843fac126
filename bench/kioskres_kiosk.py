"""The processes of bench/kiosk_resources.py: server, simulated reader, agent, baselines.

Everything is a real process started the way an operator starts it: ``kiosk server run``
(SQLite, demo people, one provisioned kiosk), ``kiosk reader simulate`` (the simulated SAM on
a pty, cards placed through its TCP control interface), ``kiosk device run --config`` (the
agent under measurement), the camera stream (bench/kioskres_video.py serve) and the two
baselines: a bare Python process doing nothing, and a bare capture reading the camera stream.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.e2e_support: the end-to-end tests' card

from tests.e2e_support import card  # noqa: E402

BARE = "import time\nwhile True: time.sleep(3600)"

# `kiosk device run` without the rest of the command line: siheyi.cli's own logging set-up
# (siheyi.logsetup, defaults) and `_device_run`, but not `build_parser`, which imports every
# command's module (the server, OpenCV for `kiosk camera scan`) before it knows which command
# runs. `--entry lean` measures what that costs the agent.
LEAN = """import argparse, sys
from siheyi import cli, logsetup
parser = argparse.ArgumentParser()
logsetup.add_arguments(parser)
args = parser.parse_args([])
args.config = sys.argv[1]
logsetup.configure_from_args(args)
sys.exit(cli._device_run(args))
"""


def kiosk_cmd(*words: str) -> list[str]:
    """The ``kiosk`` console script of this venv (``python -m siheyi.cli`` if not installed)."""
    script = Path(sys.executable).parent / "kiosk"
    if script.exists():
        return [str(script), *words]
    return [sys.executable, "-m", "siheyi.cli", *words]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml(config: dict[str, Any]) -> str:
    """Flat keys first, then one table per section (JSON scalars are TOML scalars here)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for section, table in config.items():
        if isinstance(table, dict):
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


class Kiosk:
    """One kiosk's world in ``work``: the processes, the taps and what the server recorded."""

    def __init__(
        self, work: Path, *, player: str, prompt_cache: Path, entry: str = "kiosk"
    ) -> None:
        self.work = work
        self.entry = entry
        self.player = player
        self.prompt_cache = prompt_cache
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = work / "server.db"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.people: list[str] = []
        self.reader = ""
        self.control: socket.socket | None = None
        self.control_file: IO[str] | None = None
        self.taps = 0

    # -- set-up ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Demo people on the server, one provisioned kiosk, the cards the simulator holds."""
        from provisioning.registry import add_device, write_bundle
        from server.verify.demodata import generate_people, load_demo_data, pick_demo_people
        from siheyi.cli import local_fleet

        now = dt.datetime.now(dt.UTC)
        load_demo_data(self.db, 300, 7, now=now)
        picked = pick_demo_people(generate_people(300, 7, now), now, {"pass": 6, "check": 2})
        self.people = [number for _outcome, number in picked]
        issued = add_device(local_fleet(None, self.db), "SN-RES-1", "site-a", server_url=self.url)
        write_bundle(issued, self.work / "bundle.json")
        cards = [card(n) for n in self.people]
        (self.work / "cards.json").write_text(json.dumps(cards, ensure_ascii=False))

    def spawn(self, cmd: list[str], log: str) -> subprocess.Popen[bytes]:
        out = (self.work / log).open("ab")
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        out.close()
        self.procs.append(proc)
        return proc

    def start_server(self) -> None:
        cmd = kiosk_cmd("server", "run", "--database", str(self.db))
        proc = self.spawn([*cmd, "--host", "127.0.0.1", "--port", str(self.port)], "server.log")
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the server did not start: see server.log")
            time.sleep(0.1)

    def start_reader(self) -> None:
        """``kiosk reader simulate`` with a TCP control interface; connects to it."""
        port = free_port()
        link = self.work / "reader"
        cmd = kiosk_cmd("reader", "simulate", "--cards", str(self.work / "cards.json"))
        proc = self.spawn(
            [*cmd, "--link", str(link), "--control", f"127.0.0.1:{port}"], "reader.log"
        )
        self.control = self._connect(port, proc)
        self.control_file = self.control.makefile("rw", encoding="utf-8", newline="\n")
        self.reader = str(link)

    @staticmethod
    def _connect(port: int, proc: subprocess.Popen[bytes]) -> socket.socket:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                return socket.create_connection(("127.0.0.1", port), timeout=10)
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the simulated reader did not start: see reader.log")
            time.sleep(0.1)

    # -- the agent ---------------------------------------------------------------------------
    def agent_config(self, camera_url: str | None) -> Path:
        """The kiosk's TOML: production defaults but for the edges (reader, GPIO, sound)."""
        config: dict[str, Any] = {
            "bundle": str(self.work / "bundle.json"),
            "state_dir": str(self.work / "state"),
            "reader": {"url": self.reader},
            "voice": {"player": self.player, "cache_dir": str(self.prompt_cache)},
            "gpio": {"pin_factory": "mock"},
        }
        if camera_url is not None:
            config["camera"] = {"enabled": True, "source": camera_url, "fps": 15.0}
        path = self.work / ("kiosk-camera.toml" if camera_url else "kiosk.toml")
        path.write_text(toml(config))
        return path

    def start_agent(
        self, camera_url: str | None, timeout_s: float = 120
    ) -> subprocess.Popen[bytes]:
        """``kiosk device run``, returned once it logs that it runs."""
        log = self.work / "agent.log"
        before = log.stat().st_size if log.exists() else 0
        config = str(self.agent_config(camera_url))
        if self.entry == "lean":
            cmd = [sys.executable, "-c", LEAN, config]
        else:
            cmd = kiosk_cmd("device", "run", "--config", config)
        proc = self.spawn(cmd, log.name)
        deadline = time.monotonic() + timeout_s
        while b" running" not in log.read_bytes()[before:]:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the agent did not start: see agent.log")
            time.sleep(0.1)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM (the agent closes its journal and sockets), SIGKILL after 15 s."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        if self.control is not None:
            self.control.close()
        for proc in reversed(list(self.procs)):
            self.stop(proc)

    # -- taps --------------------------------------------------------------------------------
    def tap(self, rng: random.Random, hold_s: float = 0.5) -> None:
        """A card placed for ``hold_s`` and taken away, through the control interface."""
        assert self.control_file is not None
        self.control_file.write(f"tap #{rng.randrange(len(self.people))} {hold_s}\n")
        self.control_file.flush()
        answer = self.control_file.readline()
        if not answer.startswith("tapped"):
            raise SystemExit(f"the simulated reader answered {answer!r} to a tap")
        self.taps += 1

    def decisions(self, since: dt.datetime, until: dt.datetime) -> dict[str, int]:
        """Decisions the server's audit holds from this window: ID cards, QR codes."""
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as conn:
            rows = conn.execute(
                "SELECT wall_time, masked_id FROM audit_events WHERE kind = 'decision'"
            ).fetchall()
        out = {"card": 0, "qr": 0}
        for wall, masked in rows:
            if since <= dt.datetime.fromisoformat(wall) < until:
                out["card" if masked else "qr"] += 1
        return out

    def camera_health(self) -> dict[str, Any]:
        """The camera's figures in the kiosk's last heartbeat (its totals since it started)."""
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as conn:
            row = conn.execute("SELECT last_heartbeat FROM devices").fetchone()
        beat = json.loads(row[0]) if row and row[0] else {}
        cameras = [s for s in beat.get("sources", []) if "frames" in s]
        keys = ("fps", "frames", "drops", "decoded_frames", "skipped_frames", "avg_decode_ms")
        return {k: cameras[0].get(k) for k in keys} if cameras else {}

    # -- baselines and the camera ------------------------------------------------------------
    def start_bare(self) -> subprocess.Popen[bytes]:
        """A bare Python process doing nothing: the floor of memory and CPU."""
        return self.spawn([sys.executable, "-c", BARE], "bare.log")

    def start_stream(self, video: Path, fps: float) -> str:
        """The camera: ``video`` served live at ``fps``; its URL."""
        script = str(Path(__file__).with_name("kioskres_video.py"))
        proc = self.spawn(
            [sys.executable, script, "serve", str(video), "--fps", str(fps)], "stream.log"
        )
        return self._first_line(proc, "stream.log")

    def start_capture(self, url: str) -> subprocess.Popen[bytes]:
        """The bare capture: the stream read with ``cv2.VideoCapture``, frames discarded."""
        script = str(Path(__file__).with_name("kioskres_video.py"))
        proc = self.spawn([sys.executable, script, "read", url], "capture.log")
        self._first_line(proc, "capture.log")
        return proc

    def _first_line(self, proc: subprocess.Popen[bytes], log: str) -> str:
        deadline = time.monotonic() + 60
        path = self.work / log
        while time.monotonic() < deadline and proc.poll() is None:
            text = path.read_text() if path.exists() else ""
            if text.endswith("\n"):
                return text.splitlines()[-1].strip()
            time.sleep(0.05)
        raise SystemExit(f"no output from {' '.join(map(str, proc.args))}: see {log}")  # type: ignore[arg-type]
