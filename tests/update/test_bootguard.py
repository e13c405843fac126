"""The boot guard: whatever state the disk is in, ``current`` ends at a release that starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from device.doctor import CHECKS
from device.update import bootguard
from device.update.bootguard import (
    NOT_THE_RELEASE,
    Guard,
    mask_ids,
    release_target,
    switch_link,
    write_json_atomic,
)
from tests.update.fakes import doctor_runs, install_first, running, set_doctor, write_release

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


def release(root: Path, version: str) -> Path:
    return root / "releases" / version


@pytest.mark.parametrize(
    "failed",
    [["prompts"], ["disk"], ["journal"], ["prompts", "journal", "disk", "clock"]],
    ids=["new-prompt-texts", "low-disk", "journal-backlog", "all-of-them"],
)
def test_doctor_failures_that_are_not_the_release_s_do_not_roll_back(
    root: Path, state_path: Path, failed: list[str]
) -> None:
    """A release that changes a prompt's text has clips missing until its agent starts,
    after the guard; a full disk or a journal backlog is what the old agent left."""
    trial_of(root, state_path)
    set_doctor(release(root, "2.0"), 1, failed)
    assert guard(root, state_path)["state"] == "trial"
    assert running(root) == "2.0"
    assert doctor_runs(release(root, "1.0")) == []  # nothing to compare: not asked


@pytest.mark.parametrize("before", ["fail", "warn"])
def test_a_check_that_is_bad_on_the_previous_release_too_is_not_the_new_one_s_fault(
    root: Path, state_path: Path, before: str
) -> None:
    """An unplugged camera fails whatever release runs: the good release stays."""
    trial_of(root, state_path)
    set_doctor(release(root, "2.0"), 1, ["camera"])
    set_doctor(release(root, "1.0"), 1 if before == "fail" else 0, **{f"{before}ed": ["camera"]})
    assert guard(root, state_path)["state"] == "trial"
    assert running(root) == "2.0"
    assert len(doctor_runs(release(root, "1.0"))) == 1


def test_a_check_only_the_new_release_fails_rolls_it_back(root: Path, state_path: Path) -> None:
    trial_of(root, state_path)
    set_doctor(release(root, "2.0"), 1, ["camera", "gpio", "prompts"])
    set_doctor(release(root, "1.0"), 1, ["camera"])
    after = guard(root, state_path)
    assert (after["state"], after["detail"]) == (
        "rolled_back",
        "kiosk doctor failed (exit 1): gpio",
    )
    assert running(root) == "1.0"


def test_a_passing_doctor_does_not_run_the_previous_one(root: Path, state_path: Path) -> None:
    trial_of(root, state_path)
    assert guard(root, state_path)["state"] == "trial"
    assert len(doctor_runs(release(root, "2.0"))) == 1
    assert doctor_runs(release(root, "1.0")) == []


def test_the_guard_runs_doctor_with_quiet_audio(root: Path, state_path: Path) -> None:
    """Nothing is spoken at the gate on a trial start; the same config is checked."""
    trial_of(root, state_path)
    Guard(root, state_path, Path("/etc/siheyi/kiosk.toml")).run()
    assert doctor_runs(release(root, "2.0")) == [
        "doctor --json --quiet-audio --config /etc/siheyi/kiosk.toml"
    ]


@pytest.mark.parametrize("failed", [[], ["reader"]])
def test_a_doctor_without_quiet_audio_is_asked_again_without_it(
    root: Path, state_path: Path, failed: list[str]
) -> None:
    """A release older than the option is judged all the same (it then speaks its prompt)."""
    trial_of(root, state_path)
    set_doctor(release(root, "2.0"), 1 if failed else 0, failed)
    (release(root, "2.0") / "doctor_old").touch()
    after = guard(root, state_path)
    assert after["state"] == ("rolled_back" if failed else "trial")
    assert doctor_runs(release(root, "2.0")) == ["doctor --json --quiet-audio", "doctor --json"]


def test_the_checks_the_guard_never_judges_are_doctor_s_names() -> None:
    assert set(CHECKS) >= NOT_THE_RELEASE


def test_a_doctor_crash_is_logged_and_recorded_with_id_numbers_masked(
    root: Path, state_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Doctor's own JSON is masked; a traceback on stderr is not, and the guard (stdlib
    only) masks it before the journal and state.json see it."""
    trial_of(root, state_path)
    set_doctor(release(root, "2.0"), 1)
    (release(root, "2.0") / "doctor.json").write_text("")
    (release(root, "2.0") / "doctor.err").write_text(
        "Traceback ...\n"
        "ValueError: card 11010519491231002x and HKM123456789012 at 110105491231002\n"
    )
    config = root.parent / "kiosk.toml"
    config.write_text(f'state_dir = "{state_path.parent.parent}"\n[update]\nroot = "{root}"\n')
    assert bootguard.main(["--config", str(config)]) == 0
    after = json.loads(state_path.read_text())
    logged = capsys.readouterr().err
    for text in (str(after["detail"]), logged):
        assert "1101**********002X" in text and "HKM1*******9012" in text
        assert "1101*******1002" in text
        for clear in ("11010519491231002", "123456789012", "110105491231002"):
            assert clear not in text
    assert after["state"] == "rolled_back" and "ValueError: card" in str(after["detail"])


def test_mask_ids_keeps_what_is_no_id_number() -> None:
    text = "exit 1 at 2026-11-28, pid 12345, sha 0123456789abcdef, run 12345678901234567890"
    assert mask_ids(text) == text
    assert mask_ids("id=11010519491231002X;") == "id=1101**********002X;"


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
