"""The boot guard: before every agent start, make sure ``current`` is a release that works.

systemd runs it as ``ExecStartPre`` under the system ``/usr/bin/python3`` (install.sh copies
this file to ``/opt/siheyi/bin/siheyi-boot-guard``), so it imports nothing but the standard
library and never fails: it always exits 0, because the agent must start whatever happens
here, and it only ever points ``current`` at a release whose ``bin/kiosk`` exists.

While a trial is uncommitted (state ``trial``) every start counts a boot; a third start, a
``current`` that does not resolve to the trial's release, or ``kiosk doctor --quiet-audio``
failing a check that is the release's fault (:func:`judge_doctor`) switch ``current`` back to
the previous release and record ``rolled_back`` with the reason, which the agent then
reports. Nothing it writes or logs carries a clear ID number (:func:`mask_ids`).

The file operations the updater needs to be power-cut safe (atomic state writes, atomic link
switches) live here too, so there is one copy of them; the updater imports them
(docs/updates.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

#: Starts of an uncommitted trial before it is given up (the first start is boot 1).
MAX_BOOTS = 2
#: How long ``kiosk doctor`` may take before it counts as failed (its checks run side by side
#: with seconds each; the unit's TimeoutStartSec=180 must also cover the agent's own start).
DOCTOR_TIMEOUT_S = 60.0
STATE_NAME = "state.json"
RELEASES = "releases"
CURRENT = "current"
PREVIOUS = "previous"


# -- power-cut safe file operations (shared with device.update) ---------------------------


def fsync_dir(path: Path) -> None:
    """Make a rename or link change in ``path`` durable (the directory entry itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` so that a power cut leaves the old file or the new one, never half:
    a temporary file, fsynced, renamed over the old one, and the directory fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class Unreadable(Exception):
    """The state file exists but is not a JSON object (a disk that lost it)."""


def read_state(path: Path) -> dict[str, Any] | None:
    """The update state, None when there is none; :class:`Unreadable` when it is garbage."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise Unreadable(str(exc)) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise Unreadable(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Unreadable("not a JSON object")
    return data


def switch_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` (relative) atomically: ``<link>.new`` replaces it."""
    new = link.with_name(link.name + ".new")
    if new.is_symlink() or new.exists():
        new.unlink()
    os.symlink(target, new)
    os.replace(new, link)
    fsync_dir(link.parent)


def release_target(version: str) -> str:
    """The relative link target of a release, as ``current`` and ``previous`` hold it."""
    return f"{RELEASES}/{version}"


def linked_version(link: Path) -> str | None:
    """The release a link points at (``releases/<version>``), None when it is no such link."""
    try:
        target = os.readlink(link)
    except OSError:
        return None
    parent, _, version = target.rstrip("/").rpartition("/")
    if Path(parent).name != RELEASES or not version:
        return None
    return version


def release_works(root: Path, version: str | None) -> bool:
    """A release that can start: its directory holds an executable ``bin/kiosk``.

    Only complete installs are ever renamed to ``releases/<version>``, so this is enough.
    """
    if not version:
        return False
    kiosk = root / RELEASES / version / "bin" / "kiosk"
    return kiosk.is_file() and os.access(kiosk, os.X_OK)


# -- the guard -----------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"siheyi-boot-guard: {mask_ids(message)}", file=sys.stderr, flush=True)


#: Doctor checks that never judge a trial: the network and the clock (the self-test tap
#: judges the release's talk with the server), the disk and the journal (what the old agent
#: left behind), and the prompt cache (the new agent renders missing clips when it starts,
#: after the guard, and a release that changes a prompt's text always has some missing).
NOT_THE_RELEASE = frozenset({"server", "tls", "session", "clock", "disk", "journal", "prompts"})
#: A check in one of these states on the previous release too is the place's, not the new
#: release's (an unplugged camera, a missing group).
ALREADY_BAD = frozenset({"fail", "warn"})
QUIET_AUDIO = "--quiet-audio"  # no prompt spoken at the gate on every trial start


# -- privacy: the guard cannot import core.idnumbers ---------------------------------------

_ID_SHAPES = re.compile(
    r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9])"  # GB 11643, 18 characters
    r"|(?<![A-Za-z])[A-Za-z]{3}[0-9]{12}(?![0-9])"  # permit: 3 letters, 12 digits
    r"|(?<![0-9])[0-9]{15}(?![0-9])"  # first-generation 15-digit number
)


def mask_ids(text: str) -> str:
    """``text`` with every ID-number shape masked as core.idnumbers.mask does: the first and
    last four characters kept (``1101**********002X``). Doctor's own JSON is masked already;
    its stderr (a traceback) is not, and it goes to the journal and state.json."""
    return _ID_SHAPES.sub(lambda m: _mask(m.group(0).upper()), text)


def _mask(number: str) -> str:
    return number[:4] + "*" * (len(number) - 8) + number[-4:]


# -- doctor ----------------------------------------------------------------------------------


class DoctorResult:
    """One ``kiosk doctor --json`` run: each check's status, or why there is no report."""

    def __init__(self, exit_status: int, checks: dict[str, str] | None, problem: str) -> None:
        self.exit_status = exit_status
        self.checks = checks  # None: no JSON report (crashed, timed out, could not start)
        self.problem = problem

    def failed(self) -> list[str]:
        return [name for name, status in (self.checks or {}).items() if status == "fail"]


def doctor_command(kiosk: Path, config: Path | None, quiet: bool = True) -> list[str]:
    command = [str(kiosk), "doctor", "--json"] + ([QUIET_AUDIO] if quiet else [])
    return command + (["--config", str(config)] if config is not None else [])


def run_doctor_once(kiosk: Path, config: Path | None, timeout_s: float) -> DoctorResult:
    """Doctor with ``--quiet-audio``; a release too old to know the option is asked again
    without it (it then speaks its test prompt, as it always did)."""
    try:
        done = _doctor_process(doctor_command(kiosk, config), timeout_s)
        if done.returncode == 2 and QUIET_AUDIO in done.stderr and not done.stdout.strip():
            done = _doctor_process(doctor_command(kiosk, config, quiet=False), timeout_s)
    except subprocess.TimeoutExpired:
        return DoctorResult(-1, None, f"kiosk doctor did not finish within {timeout_s:.0f} s")
    except OSError as exc:
        return DoctorResult(-1, None, f"kiosk doctor could not run: {exc}")
    checks = check_statuses(done.stdout)
    problem = "" if checks is not None else _last_words(done.stdout, done.stderr)
    return DoctorResult(done.returncode, checks, problem)


def _doctor_process(command: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)


def _last_words(stdout: str, stderr: str) -> str:
    """The end of what a doctor that gave no report printed (masked: it reaches state.json,
    the journal and the server)."""
    text = stdout.strip()[-200:] or stderr.strip()[-200:]
    return mask_ids(text) or "no output"


def check_statuses(stdout: str) -> dict[str, str] | None:
    """``{check: status}`` from doctor's JSON (``{"ok", "checks": [...]}``); None if none."""
    try:
        report = json.loads(stdout)
    except ValueError:
        return None
    checks = report.get("checks") if isinstance(report, dict) else None
    if not isinstance(checks, list):
        return None
    return {
        str(c.get("name", "?")): str(c.get("status", "?")) for c in checks if isinstance(c, dict)
    }


def judge_doctor(kiosk: Path, previous: Path | None, config: Path | None, timeout_s: float) -> str:
    """ "" when the new release's doctor says nothing against the release, else why.

    Only checks that can be the release's fault count (not :data:`NOT_THE_RELEASE`); when
    some fail, the previous release's doctor runs too (only then, to keep starts fast), and a
    check that fails or warns there as well is the place's fault, not the release's.
    """
    new = run_doctor_once(kiosk, config, timeout_s)
    if new.exit_status == 0:
        return ""
    if new.checks is None:
        return f"kiosk doctor failed (exit {new.exit_status}): {new.problem}"
    if not new.failed():  # non-zero without a failed check: doctor could not judge
        return f"kiosk doctor failed (exit {new.exit_status}) without naming a check"
    blamed = [name for name in new.failed() if name not in NOT_THE_RELEASE]
    if blamed and previous is not None:
        before = run_doctor_once(previous, config, timeout_s).checks or {}
        excused = [name for name in blamed if before.get(name) in ALREADY_BAD]
        if excused:
            _log(f"kiosk doctor: {', '.join(excused)} fail on the previous release too")
        blamed = [name for name in blamed if name not in excused]
    if not blamed:
        _log(f"kiosk doctor: failed {', '.join(new.failed())}: not the release's fault")
        return ""
    return f"kiosk doctor failed (exit {new.exit_status}): {', '.join(blamed)}"[:400]


class Guard:
    """One run of the boot guard over a root (``releases/``, links) and a state file."""

    def __init__(
        self,
        root: Path,
        state_path: Path,
        config: Path | None = None,
        *,
        doctor: bool = True,
        doctor_timeout_s: float = DOCTOR_TIMEOUT_S,
    ) -> None:
        self.root = root
        self.state_path = state_path
        self.config = config
        self.doctor = doctor
        self.doctor_timeout_s = doctor_timeout_s

    @property
    def current(self) -> Path:
        return self.root / CURRENT

    @property
    def previous(self) -> Path:
        return self.root / PREVIOUS

    def run(self) -> None:
        """Judge an uncommitted trial, then make sure ``current`` works whatever happened."""
        state = self._load_state()
        if state is not None and state.get("state") == "trial":
            self._judge_trial(state)
        self._ensure_current(state)

    def _load_state(self) -> dict[str, Any] | None:
        """The state; an unreadable one is taken as a trial of whatever ``current`` is (the
        boot count is lost, so the doctor and the agent's self-test judge it afresh)."""
        try:
            return read_state(self.state_path)
        except Unreadable as exc:
            _log(f"state file unreadable ({exc}): judging current as a trial")
            current = linked_version(self.current)
            previous = linked_version(self.previous)
            if current is None or current == previous:
                return None
            return {
                "state": "trial",
                "version": current,
                "previous": previous,
                "boots": 0,
                "detail": "state file was unreadable",
            }

    def _judge_trial(self, state: dict[str, Any]) -> None:
        boots = _int(state.get("boots")) + 1
        state["boots"] = boots
        self._write(state)
        version = str(state.get("version", ""))
        if state.get("failing"):  # the agent was rolling back when it stopped: finish it
            self._roll_back(state, str(state["failing"]))
            return
        if linked_version(self.current) != version:
            # Stopped between the state write and the switch: the old release still runs
            # and nothing was tried, so the updater may try this release again.
            _log(f"the switch to {version} did not happen: staying on the running release")
            state.update(
                state="failed",
                detail="interrupted before the switch; will be retried",
                retry=True,
                at=time.time(),
                acked=False,
            )
            self._write(state)
            return
        reason = ""
        if boots > MAX_BOOTS:
            reason = f"the new release did not commit within {MAX_BOOTS} starts"
        elif not release_works(self.root, version):
            reason = "the new release is missing or has no bin/kiosk"
        elif self.doctor:
            reason = judge_doctor(
                self.current / "bin" / "kiosk",
                self._previous_kiosk(state, version),
                self.config,
                self.doctor_timeout_s,
            )
        if reason:
            self._roll_back(state, reason)

    def _previous_kiosk(self, state: dict[str, Any], version: str) -> Path | None:
        """``bin/kiosk`` of the release the trial came from (to compare doctors with)."""
        for back in (str(state.get("previous") or ""), linked_version(self.previous)):
            if back and back != version and release_works(self.root, back):
                return self.root / RELEASES / back / "bin" / "kiosk"
        return None

    def _roll_back(self, state: dict[str, Any], reason: str) -> None:
        """``current`` back to the release that ran before the trial; recorded with why."""
        back = self._fallback(str(state.get("previous") or ""), str(state.get("version", "")))
        if back is None:
            _log(f"trial failed ({reason}) but no working release to return to")
            detail = mask_ids(f"{reason}; nothing to roll back to")[:500]
            state.update(state="failed", detail=detail)
        else:
            if linked_version(self.current) != back:
                switch_link(self.current, release_target(back))
            _log(f"rolled back to {back}: {reason}")
            state.update(state="rolled_back", detail=mask_ids(reason)[:500], running=back)
        state.update(at=time.time(), acked=False, failing=None)
        self._write(state)

    def _fallback(self, wanted: str, failed: str | None = None) -> str | None:
        """The release to return to: the one named, else ``previous``, else the newest that
        works; never ``failed`` (the release being given up)."""
        for version in (wanted, linked_version(self.previous)):
            if version != failed and release_works(self.root, version):
                return version
        return self._any_working(failed)

    def _any_working(self, failed: str | None) -> str | None:
        releases = self.root / RELEASES
        try:
            found = [p for p in releases.iterdir() if not p.name.endswith(".partial")]
        except OSError:
            return None
        found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return next(
            (p.name for p in found if p.name != failed and release_works(self.root, p.name)),
            None,
        )

    def _ensure_current(self, state: dict[str, Any] | None) -> None:
        """A dangling or broken ``current`` (a release removed by hand, a disk that lost it)
        is pointed at a working release; with none, it is left for the operator."""
        current = linked_version(self.current)
        if release_works(self.root, current):
            return
        back = self._fallback(linked_version(self.previous) or "")
        if back is None:
            _log("no working release under releases/: leaving current as it is")
            return
        switch_link(self.current, release_target(back))
        _log(f"current ({current}) does not work: switched to {back}")
        if state is not None and state.get("state") in ("trial", "committed"):
            state.update(
                state="rolled_back",
                detail=f"release {current} did not work at start",
                running=back,
                at=time.time(),
                acked=False,
            )
            self._write(state)

    def _write(self, state: dict[str, Any]) -> None:
        try:
            write_json_atomic(self.state_path, state)
        except OSError as exc:
            _log(f"cannot write {self.state_path}: {exc}")


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def paths_from_config(config: Path | None) -> tuple[Path, Path]:
    """(root, state file) from kiosk.toml's ``[update] root`` and ``state_dir``."""
    data: dict[str, Any] = {}
    if config is not None:
        try:
            data = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            _log(f"cannot read {config} ({exc}): using the default paths")
    section = data.get("update")
    update: dict[str, Any] = section if isinstance(section, dict) else {}
    root = Path(str(update.get("root") or "/opt/siheyi"))
    state_dir = Path(str(data.get("state_dir") or "/var/lib/siheyi"))
    return root, state_dir / "update" / STATE_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="siheyi-boot-guard", description=__doc__)
    parser.add_argument("--config", type=Path, help="kiosk.toml (root and state_dir)")
    parser.add_argument("--root", type=Path, help="overrides [update] root")
    parser.add_argument("--state", type=Path, help="overrides <state_dir>/update/state.json")
    parser.add_argument("--no-doctor", action="store_true", help="judge a trial without doctor")
    args = parser.parse_args(argv)
    root, state_path = paths_from_config(args.config)
    guard = Guard(
        args.root or root, args.state or state_path, args.config, doctor=not args.no_doctor
    )
    try:
        guard.run()
    except Exception as exc:  # the agent must start whatever went wrong here
        _log(f"unexpected failure, starting the agent as it is: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
