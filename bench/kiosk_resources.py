"""What the kiosk agent costs a Pi: memory and CPU idle, with the camera, and while tapping.

The real agent (`kiosk device run --config`, its own process, measured from /proc with its
threads and the prompt players it starts) runs against the real server (`kiosk server run`,
SQLite, on loopback) with the simulated SAM reader on a pty (`kiosk reader simulate`, cards
tapped through its TCP control interface) and `aplay -D null` for the voice. The camera is a
generated 640×480 video served live as an MJPEG stream at 15 frames/s (bench/kioskres_video.py:
a file would be read at the decoder's pace, not the camera's).

Phases (each `--seconds`, default 60), two agent processes:
  idle        the agent without a camera, nobody tapping
  idle_taps   the same agent, a card tapped every 3 s
  camera      a fresh agent with the camera at 15 frames/s, nobody tapping (the video shows a
              QR code for one second every 20 s: that is decided like any credential)
  taps        the camera agent, a card tapped every 3 s

Side by side, in the same run: a bare Python process doing nothing (memory and CPU floor), and
during the camera phase a bare capture (the same stream read with cv2.VideoCapture, frames
thrown away: the floor of having a camera at all).

Targets (issue 13): RSS ≤ 150 MB; CPU ≤ 5 % of a core idle without camera, ≤ 25 % with the
camera at 15 fps. Final line, JSON, percent of one core:
  {"rss_mb", "idle_cpu_pct", "camera_cpu_pct", "tap_cpu_pct", ...}

    .venv/bin/python bench/kiosk_resources.py [--seconds 60] [--phases idle,idle_taps,camera,taps]
        [--warmup 10] [--tap-every 3] [--entry kiosk|lean] [--profile DIR] [--keep]

`--entry lean` runs the same agent without `kiosk`'s full command line (which imports every
command's module, the server's and OpenCV's included, before it knows which one runs), to show
what that costs; `--profile DIR` records each phase with py-spy (raw stacks, one file a phase).
A bare process doing nothing uses no CPU, so CPU is compared with the bare capture instead
(`camera_vs_capture`); memory with both (`rss_ratio` against the bare Python process).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kioskres_video as video
from kioskres_kiosk import Kiosk
from kioskres_procs import Meter, Reading

PHASES = ("idle", "idle_taps", "camera", "taps")
CAMERA_PHASES = ("camera", "taps")
TAP_PHASES = ("idle_taps", "taps")
TARGETS = {"rss_mb": 150.0, "idle_cpu_pct": 5.0, "camera_cpu_pct": 25.0}
FPS = 15.0


@dataclass
class Phase:
    """One phase's readings."""

    name: str
    agent: Reading
    bare: Reading
    capture: Reading | None
    since: dt.datetime
    until: dt.datetime
    taps: int
    load: float


class Bench:
    """Runs the phases against one kiosk world."""

    def __init__(self, kiosk: Kiosk, args: argparse.Namespace) -> None:
        self.kiosk = kiosk
        self.args = args
        self.rng = random.Random(1)
        self.phases: list[Phase] = []
        self.camera_url = ""
        self.camera_health: dict[str, Any] = {}

    def run(self) -> list[Phase]:
        bare = self.kiosk.start_bare()
        plain = [p for p in PHASES if p in self.args.phases and p not in CAMERA_PHASES]
        camera = [p for p in PHASES if p in self.args.phases and p in CAMERA_PHASES]
        if plain:
            self._agent(None, plain, bare.pid)
        if camera:
            clip = video.make_video(self.kiosk.work / "camera.avi", fps=FPS)
            self.camera_url = self.kiosk.start_stream(clip, FPS)
            self._agent(self.camera_url, camera, bare.pid)
            self.camera_health = self.kiosk.camera_health()
        return self.phases

    def _agent(self, camera_url: str | None, phases: list[str], bare_pid: int) -> None:
        agent = self.kiosk.start_agent(camera_url)
        try:
            time.sleep(self.args.warmup)  # session, first heartbeat, camera open, caches warm
            for name in phases:
                self.phases.append(self._phase(name, agent, bare_pid))
            time.sleep(3)  # the journal's last upload (every 2 s) before the agent stops
        finally:
            self.kiosk.stop(agent)

    def _phase(self, name: str, agent: subprocess.Popen[bytes], bare_pid: int) -> Phase:
        capture = None
        if name == "camera" and not self.args.no_capture_baseline:
            capture = self.kiosk.start_capture(self.camera_url)
            time.sleep(1.0)  # the capture's own start-up is not its running cost
        meters = [Meter(agent.pid).start(), Meter(bare_pid).start()]
        if capture is not None:
            meters.append(Meter(capture.pid).start())
        spy = self._profile(name, agent.pid)
        since = dt.datetime.now(dt.UTC)
        taps = self._wait(agent, tapping=name in TAP_PHASES)
        until = dt.datetime.now(dt.UTC)
        readings = [m.stop() for m in meters]
        if capture is not None:
            self.kiosk.stop(capture)
        if spy is not None:
            spy.wait()
        return Phase(
            name, readings[0], readings[1], readings[2] if capture else None, since, until,
            taps, os.getloadavg()[0],
        )  # fmt: skip

    def _wait(self, agent: subprocess.Popen[bytes], *, tapping: bool) -> int:
        """``--seconds`` of the phase, a tap every ``--tap-every`` s if ``tapping``."""
        start = time.monotonic()
        end = start + self.args.seconds
        taps = 0
        next_tap = start + 0.5
        while (now := time.monotonic()) < end:
            if agent.poll() is not None:
                raise SystemExit("the agent ended during a phase: see agent.log")
            if tapping and now >= next_tap:
                self.kiosk.tap(self.rng)
                taps += 1
                next_tap += self.args.tap_every
                continue
            time.sleep(max(0.0, min(0.25, end - now, (next_tap - now) if tapping else 0.25)))
        return taps

    def _profile(self, name: str, pid: int) -> subprocess.Popen[bytes] | None:
        if self.args.profile is None:
            return None
        spy = Path(sys.executable).parent / "py-spy"
        if not spy.exists():
            raise SystemExit("--profile needs py-spy (.venv/bin/pip install py-spy)")
        self.args.profile.mkdir(parents=True, exist_ok=True)
        out = self.args.profile / f"{name}.txt"
        cmd = [str(spy), "record", "--format", "raw", "--nonblocking", "--threads", "-r", "50"]
        cmd += ["-d", str(max(1, int(self.args.seconds))), "-o", str(out), "-p", str(pid)]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summary(bench: Bench, phases: list[Phase], player: str) -> dict[str, Any]:
    """The final JSON line."""
    by = {p.name: p for p in phases}

    def cpu(name: str) -> float | None:
        return round(by[name].agent.cpu_pct, 2) if name in by else None

    rss = max(p.agent.rss_mb_max for p in phases)
    bare_rss = max(p.bare.rss_mb_max for p in phases)
    bare_cpu = sum(p.bare.cpu_pct * p.agent.seconds for p in phases) / sum(
        p.agent.seconds for p in phases
    )
    out: dict[str, Any] = {
        "rss_mb": round(rss, 1),
        "idle_cpu_pct": cpu("idle"),
        "camera_cpu_pct": cpu("camera"),
        "tap_cpu_pct": cpu("taps"),
        "nocam_tap_cpu_pct": cpu("idle_taps"),
        "bare_rss_mb": round(bare_rss, 1),
        "bare_cpu_pct": round(bare_cpu, 2),
        "rss_ratio": round(rss / bare_rss, 2) if bare_rss else None,
    }
    cap = by["camera"].capture if "camera" in by else None
    if cap is not None:
        out["capture_cpu_pct"] = round(cap.cpu_pct, 2)
        out["capture_rss_mb"] = round(cap.rss_mb_max, 1)
        camera = by["camera"].agent.cpu_pct
        out["camera_vs_capture"] = round(camera / cap.cpu_pct, 2) if cap.cpu_pct else None
    if "camera" in by and "idle" in by:  # what each frame costs the agent beyond idling
        extra = by["camera"].agent.cpu_pct - by["idle"].agent.cpu_pct
        out["camera_ms_per_frame"] = round(10 * extra / FPS, 2)
    if bench.camera_health:
        out["camera_heartbeat"] = bench.camera_health
    out["phases"] = {
        p.name: {
            **p.agent.as_dict(),
            "seconds": round(p.agent.seconds, 1),
            "taps": p.taps,
            "decisions": bench.kiosk.decisions(p.since, p.until),
            "load1": round(p.load, 2),
        }
        for p in phases
    }
    out["fps"] = FPS if any(p in by for p in CAMERA_PHASES) else None
    out["player"] = player
    out["entry"] = bench.kiosk.entry
    out["met"] = {
        key: out[key] is not None and out[key] <= limit
        for key, limit in TARGETS.items()
        if out[key] is not None
    }
    return out


def table(phases: list[Phase]) -> None:
    head = f"{'phase':<10}{'cpu %':>8}{'rss MB':>8}{'threads':>8}{'taps':>6}"
    print(head + f"{'bare cpu %':>12}{'bare MB':>9}{'capture cpu %':>15}{'load':>6}")
    for p in phases:
        cap = f"{p.capture.cpu_pct:.2f}" if p.capture else "-"
        print(
            f"{p.name:<10}{p.agent.cpu_pct:>8.2f}{p.agent.rss_mb_max:>8.1f}"
            f"{p.agent.threads_max:>8}{p.taps:>6}{p.bare.cpu_pct:>12.2f}"
            f"{p.bare.rss_mb_max:>9.1f}{cap:>15}{p.load:>6.2f}"
        )


def _phases(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(set(names) - set(PHASES))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"phases are a comma list of {', '.join(PHASES)}")
    return names


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per phase (default 60)")
    parser.add_argument("--phases", type=_phases, default=PHASES, help="comma list; default all")
    parser.add_argument("--warmup", type=float, default=10.0, help="after each agent starts")
    parser.add_argument("--tap-every", type=float, default=3.0, help="seconds between taps")
    parser.add_argument(
        "--player",
        default="aplay:null" if shutil.which("aplay") else "null",
        help="voice player spec (default: aplay to ALSA's null device)",
    )
    parser.add_argument(
        "--prompt-cache",
        type=Path,
        default=Path.home() / ".cache" / "siheyi",
        help="rendered prompts (shared with bench/tap_to_voice.py)",
    )
    parser.add_argument(
        "--entry",
        choices=("kiosk", "lean"),
        default="kiosk",
        help="kiosk: `kiosk device run`; lean: the same run without the CLI's other commands",
    )
    parser.add_argument("--no-capture-baseline", action="store_true")
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks per phase into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="siheyi-kioskres-"))
    kiosk = Kiosk(work, player=args.player, prompt_cache=args.prompt_cache, entry=args.entry)
    try:
        kiosk.prepare()
        kiosk.start_server()
        kiosk.start_reader()
        bench = Bench(kiosk, args)
        phases = bench.run()
        result = summary(bench, phases, args.player)
    finally:
        kiosk.stop_all()
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)
    table(phases)
    print(json.dumps(result))
    return 0 if all(result["met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
