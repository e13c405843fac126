"""bench/kiosk_resources.py in short phases, so it cannot rot, and its /proc readings.

The bench runs end to end (server, simulated reader, two agent processes, the camera stream,
the baselines); only the shape and the sense of its JSON line are checked here — whether a
kiosk is cheap enough is the bench's business, not the tests'.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # the bench's modules import each other by name
procs = importlib.import_module("kioskres_procs")


SPIN = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"
PARENT = {
    # the child spins, ends and is waited for: its time is in the parent's cutime
    "reaped": "import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', sys.argv[1]])\n",
    # the child spins and stays: its time is read from the live descendant
    "live": "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', sys.argv[1] + 'time.sleep(60)'])\n",
}


@pytest.mark.parametrize("child", ["reaped", "live"])
def test_a_child_s_cpu_and_memory_belong_to_its_parent_s_tree(child: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT[child] + "print('spun', flush=True)\ntime.sleep(60)", SPIN],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        meter = procs.Meter(parent.pid, interval_s=0.02).start()
        if child == "live":
            deadline = time.monotonic() + 20
            while not procs.descendants(parent.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        assert parent.stdout is not None
        if child == "live":  # wait until the child has spun (its CPU clock, not ours)
            deadline = time.monotonic() + 30
            kids = procs.descendants(parent.pid)
            while procs.cpu_s(kids[0]) < 0.5 and time.monotonic() < deadline:
                time.sleep(0.02)
        else:
            assert parent.stdout.readline().strip() == "spun"
        reading = meter.stop()
    finally:
        os.killpg(parent.pid, 9)
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    assert reading.cpu_pct * reading.seconds / 100 >= 0.5  # the child's half second of CPU
    assert reading.rss_mb_max > 1
    assert reading.threads_max >= 1
    if child == "live":
        assert reading.children_max == 1


def test_toml_writes_what_the_device_config_reads(tmp_path: Path) -> None:
    from device.config import DeviceConfig

    kiosk = importlib.import_module("kioskres_kiosk")
    config = {
        "state_dir": str(tmp_path / "state"),
        "reader": {"url": str(tmp_path / "reader")},
        "gpio": {"pin_factory": "mock"},
        "camera": {"enabled": True, "source": "http://127.0.0.1:1/video.mjpg", "fps": 15.0},
    }
    (tmp_path / "kiosk.toml").write_text(kiosk.toml(config))
    loaded = DeviceConfig.load(tmp_path / "kiosk.toml")
    assert loaded.camera.enabled and loaded.camera.source.endswith("video.mjpg")
    assert loaded.reader.url == str(tmp_path / "reader")
    assert loaded.gpio.pin_factory == "mock"


@pytest.mark.slow
@pytest.mark.timeout(300)  # five processes and two agent start-ups on a shared CI machine
def test_the_bench_runs_its_phases_and_prints_one_json_line(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "kiosk_resources.py"), "--seconds", "3"]
    cmd += ["--warmup", "1", "--tap-every", "1", "--player", "null"]
    cmd += ["--prompt-cache", str(Path.home() / ".cache" / "siheyi")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: a target missed, not a crash
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("rss_mb", "idle_cpu_pct", "camera_cpu_pct", "tap_cpu_pct", "nocam_tap_cpu_pct"):
        assert isinstance(result[key], float) and result[key] >= 0, key
    assert 0 < result["bare_rss_mb"] < result["rss_mb"]
    assert result["phases"].keys() == {"idle", "idle_taps", "camera", "taps"}
    for name, phase in result["phases"].items():
        assert phase["seconds"] >= 3, name
        assert phase["threads_max"] >= 1, name
    for name in ("idle_taps", "taps"):  # every tap was decided and reached the server's audit
        phase = result["phases"][name]
        assert phase["taps"] >= 2
        assert phase["decisions"]["card"] == phase["taps"], name
    assert result["phases"]["idle"]["taps"] == 0
    assert result["capture_rss_mb"] > 0
    assert set(result["met"]) == {"rss_mb", "idle_cpu_pct", "camera_cpu_pct"}
    assert result["entry"] == "kiosk"
