"""A power cut at every step of an update boots a working release.

Each test runs the updater as a real process (:mod:`tests.update.powercut_driver`), kills
its whole process group with SIGKILL at one step (as a power cut would: the install's own
subprocess dies too), runs the boot guard as systemd would before the next start, and
checks that ``current/bin/kiosk`` starts and which release it is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.update.bootguard import Guard
from tests.update.fakes import install_first, running, state

ROOT = Path(__file__).resolve().parents[2]


def run_until(tmp: Path, mode: str, step: str, failure: str = "") -> str:
    """Run the driver to ``step``, kill it there (or let it finish with step "none")."""
    reached = tmp / "reached"
    reached.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.update.powercut_driver", str(tmp), mode, step, failure],
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not reached.exists() or not reached.read_text():
            assert proc.poll() is None or reached.exists(), "driver ended early"
            assert time.monotonic() < deadline, "driver never reached the step"
            time.sleep(0.02)
        if step != "none":
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return reached.read_text()


def boot(tmp: Path) -> str:
    """systemd's next start: the boot guard, then which release ``current`` is."""
    Guard(tmp / "opt", tmp / "var" / "update" / "state.json").run()
    return running(tmp / "opt")


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    install_first(tmp_path / "opt", "1.0")
    return tmp_path


@pytest.mark.parametrize("step", ["downloaded", "installing"])
def test_a_cut_before_the_switch_keeps_the_running_release(tmp: Path, step: str) -> None:
    assert run_until(tmp, "update", step) == step
    assert (tmp / "opt" / "releases" / "2.0.partial").exists() == (step == "installing")
    assert boot(tmp) == "1.0"
    assert not (tmp / "opt" / "releases" / "2.0").exists()  # never a half release by name
    # the next offer starts over from a clean slate and completes
    assert run_until(tmp, "update", "none") == "done trial"
    assert not (tmp / "opt" / "releases" / "2.0.partial").exists()
    assert boot(tmp) == "2.0"


def downloads(tmp: Path) -> list[str]:
    folder = tmp / "var" / "update" / "downloads"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_cut_mid_download_leaves_a_part_file_that_the_next_offer_replaces(tmp: Path) -> None:
    assert run_until(tmp, "update", "downloading") == "downloading"
    assert downloads(tmp) == ["siheyi-2.0-py3-none-any.whl.part"]
    assert boot(tmp) == "1.0"
    assert not (tmp / "var" / "update" / "state.json").exists()  # nothing to report or judge
    assert not list((tmp / "opt" / "releases").glob("2.0*"))
    assert run_until(tmp, "update", "none") == "done trial"
    assert downloads(tmp) == []
    assert boot(tmp) == "2.0"


def test_a_cut_after_the_install_before_the_trial_is_written_reuses_the_release(
    tmp: Path,
) -> None:
    assert run_until(tmp, "update", "installed") == "installed"
    assert (tmp / "opt" / "releases" / "2.0" / "siheyi-release.json").exists()
    assert not (tmp / "var" / "update" / "state.json").exists()
    assert boot(tmp) == "1.0"  # a complete release by name, but nothing points at it
    (tmp / "opt" / "releases" / "2.0" / "kept").touch()  # gone if it were built again
    assert run_until(tmp, "update", "none") == "done trial"
    assert (tmp / "opt" / "releases" / "2.0" / "kept").exists()
    assert downloads(tmp) == []  # the verified wheel left by the cut was cleared
    assert boot(tmp) == "2.0"


@pytest.mark.parametrize("step", ["state_written", "between_links"])
def test_a_cut_during_the_switch_keeps_the_old_release_and_retries(tmp: Path, step: str) -> None:
    assert run_until(tmp, "update", step) == step
    assert boot(tmp) == "1.0"
    written = state(tmp / "var")
    assert (written["state"], written["retry"]) == ("failed", True)
    assert run_until(tmp, "update", "none") == "done trial"
    assert boot(tmp) == "2.0"


def test_a_cut_after_the_switch_starts_the_new_release_on_trial(tmp: Path) -> None:
    assert run_until(tmp, "update", "switched") == "switched"
    assert boot(tmp) == "2.0"
    assert (state(tmp / "var")["state"], state(tmp / "var")["boots"]) == ("trial", 1)


def test_cuts_during_the_trial_end_in_the_old_release_by_the_third_start(tmp: Path) -> None:
    assert run_until(tmp, "update", "none") == "done trial"
    for _ in range(2):
        assert boot(tmp) == "2.0"
        assert run_until(tmp, "trial", "self_test") == "self_test"
    assert boot(tmp) == "1.0"
    written = state(tmp / "var")
    assert written["state"] == "rolled_back"
    assert "did not commit" in str(written["detail"])


def test_a_trial_that_passes_is_committed_and_stays(tmp: Path) -> None:
    assert run_until(tmp, "update", "none") == "done trial"
    assert boot(tmp) == "2.0"
    assert run_until(tmp, "trial", "none") == "done committed"
    assert boot(tmp) == "2.0"
    assert boot(tmp) == "2.0"  # committed: no more boots counted, no rollback
    assert state(tmp / "var")["boots"] == 1


@pytest.mark.parametrize("step", ["rollback_state", "rollback_switched", "none"])
def test_a_failed_self_test_rolls_back_whenever_the_power_goes(tmp: Path, step: str) -> None:
    assert run_until(tmp, "update", "none") == "done trial"
    assert boot(tmp) == "2.0"
    reached = run_until(tmp, "trial", step, "self-test: lookup broken")
    assert reached == (step if step != "none" else "done rolled_back")
    assert boot(tmp) == "1.0"
    written = state(tmp / "var")
    assert written["state"] == "rolled_back"
    assert written["detail"] == "self-test failed: self-test: lookup broken"
