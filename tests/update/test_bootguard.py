"""The boot guard: whatever state the disk is in, ``current`` ends at a release that starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from device.update import bootguard
from device.update.bootguard import Guard, release_target, switch_link, write_json_atomic
from tests.update.fakes import install_first, running, set_doctor, write_release

GUARD = Path(bootguard.__file__)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "opt"
    install_first(root, "1.0")
    return root


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "update" / "state.json"


def trial_of(
    root: Path, state_path: Path, version: str = "2.0", boots: int = 0, **extra: object
) -> None:
    """The updater's step 3 done: the release installed, the trial written, links switched."""
    if not (root / "releases" / version).exists():
        write_release(root / "releases" / version, version)
    write_json_atomic(
        state_path,
        {"version": version, "state": "trial", "previous": "1.0", "boots": boots, **extra},
    )
    switch_link(root / "current", release_target(version))


def guard(root: Path, state_path: Path) -> dict[str, object]:
    Guard(root, state_path).run()
    data: dict[str, object] = json.loads(state_path.read_text()) if state_path.exists() else {}
    return data


def test_nothing_to_judge_leaves_current_alone(root: Path, state_path: Path) -> None:
    assert guard(root, state_path) == {}
    assert running(root) == "1.0"


def test_a_trial_that_passes_doctor_boots_and_counts_the_start(
    root: Path, state_path: Path
) -> None:
    trial_of(root, state_path)
    after = guard(root, state_path)
    assert (after["state"], after["boots"]) == ("trial", 1)
    assert running(root) == "2.0"


def test_a_third_start_without_commit_rolls_back(root: Path, state_path: Path) -> None:
    trial_of(root, state_path)
    for boot in (1, 2):
        assert guard(root, state_path)["boots"] == boot
        assert running(root) == "2.0"
    after = guard(root, state_path)
    assert after["state"] == "rolled_back"
    assert "did not commit within 2 starts" in str(after["detail"])
    assert running(root) == "1.0"


def test_a_failing_doctor_rolls_back_with_the_failed_checks(root: Path, state_path: Path) -> None:
    trial_of(root, state_path)
    set_doctor(root / "releases" / "2.0", 1, ["serial", "gpio"])
    after = guard(root, state_path)
    assert after["state"] == "rolled_back"
    assert after["detail"] == "kiosk doctor failed (exit 1): serial, gpio"
    assert running(root) == "1.0"


def test_a_doctor_that_fails_only_for_the_network_does_not_roll_back(
    root: Path, state_path: Path
) -> None:
    trial_of(root, state_path)
    set_doctor(root / "releases" / "2.0", 1, ["server", "session"])
    assert guard(root, state_path)["state"] == "trial"
    assert running(root) == "2.0"


def test_a_doctor_that_cannot_read_the_config_rolls_back(root: Path, state_path: Path) -> None:
    trial_of(root, state_path)
    set_doctor(root / "releases" / "2.0", 2)
    assert guard(root, state_path)["state"] == "rolled_back"
    assert running(root) == "1.0"


def test_a_half_written_state_file_is_judged_as_a_trial_of_current(
    root: Path, state_path: Path
) -> None:
    trial_of(root, state_path)
    set_doctor(root / "releases" / "2.0", 1, ["reader"])
    state_path.write_text('{"version": "2.0", "sta')  # a disk that lost the end
    after = guard(root, state_path)
    assert after["state"] == "rolled_back"
    assert running(root) == "1.0"


def test_a_garbage_state_file_with_a_good_current_keeps_it(root: Path, state_path: Path) -> None:
    trial_of(root, state_path)
    state_path.write_bytes(b"\x00\xff\x00")
    after = guard(root, state_path)
    assert (after["state"], after["boots"]) == ("trial", 1)
    assert running(root) == "2.0"


def test_a_dangling_current_is_pointed_at_a_working_release(root: Path, state_path: Path) -> None:
    switch_link(root / "current", release_target("9.9"))  # removed by hand
    guard(root, state_path)
    assert running(root) == "1.0"


def test_a_missing_trial_release_rolls_back(root: Path, state_path: Path) -> None:
    trial_of(root, state_path)
    (root / "releases" / "2.0" / "bin" / "kiosk").unlink()
    after = guard(root, state_path)
    assert after["state"] == "rolled_back"
    assert running(root) == "1.0"


def test_a_lost_previous_falls_back_to_any_working_release(root: Path, state_path: Path) -> None:
    write_release(root / "releases" / "0.9", "0.9")
    trial_of(root, state_path)
    set_doctor(root / "releases" / "2.0", 1, ["reader"])
    for path in (root / "releases" / "1.0").rglob("*"):
        if path.is_file():
            path.unlink()
    assert guard(root, state_path)["state"] == "rolled_back"
    assert running(root) == "0.9"


def test_no_working_release_to_return_to_keeps_the_trial_running(
    root: Path, state_path: Path
) -> None:
    trial_of(root, state_path)
    set_doctor(root / "releases" / "2.0", 1, ["reader"])
    (root / "releases" / "1.0" / "bin" / "kiosk").unlink()
    after = guard(root, state_path)
    assert after["state"] == "failed"
    assert "nothing to roll back to" in str(after["detail"])
    assert running(root) == "2.0"


def test_an_interrupted_switch_stays_on_the_old_release_and_may_retry(
    root: Path, state_path: Path
) -> None:
    trial_of(root, state_path)
    switch_link(root / "current", release_target("1.0"))  # the switch never happened
    after = guard(root, state_path)
    assert (after["state"], after["retry"]) == ("failed", True)
    assert running(root) == "1.0"


@pytest.mark.parametrize("switched_back", [False, True])
def test_an_interrupted_rollback_is_finished(
    root: Path, state_path: Path, switched_back: bool
) -> None:
    trial_of(root, state_path, failing="self-test failed: boom")
    if switched_back:
        switch_link(root / "current", release_target("1.0"))
    after = guard(root, state_path)
    assert (after["state"], after["detail"]) == ("rolled_back", "self-test failed: boom")
    assert running(root) == "1.0"


def test_the_guard_runs_standalone_on_the_system_python_and_always_exits_0(
    tmp_path: Path, root: Path
) -> None:
    """Copied to /opt/siheyi/bin it has no project on its path: stdlib only (-I isolates)."""
    copy = tmp_path / "siheyi-boot-guard"
    copy.write_text(GUARD.read_text())
    config = tmp_path / "kiosk.toml"
    config.write_text(f'state_dir = "{tmp_path / "var"}"\n[update]\nroot = "{root}"\n')
    trial_of(root, tmp_path / "var" / "update" / "state.json")
    set_doctor(root / "releases" / "2.0", 1, ["reader"])
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    done = subprocess.run([python, "-I", str(copy), "--config", str(config)], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert b"rolled back to 1.0" in done.stderr
    assert running(root) == "1.0"
    broken = subprocess.run([python, "-I", str(copy), "--root", "/nonexistent/x"])
    assert broken.returncode == 0
