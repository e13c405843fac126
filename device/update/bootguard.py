"""The boot guard: before every agent start, make sure ``current`` is a release that works.

systemd runs it as ``ExecStartPre`` under the system ``/usr/bin/python3`` (install.sh copies
this file to ``/opt/siheyi/bin/siheyi-boot-guard``), so it imports nothing but the standard
library and never fails: it always exits 0, because the agent must start whatever happens
here, and it only ever points ``current`` at a release whose ``bin/kiosk`` exists.

While a trial is uncommitted (state ``trial``) every start counts a boot; a third start, a
``current`` that does not resolve to the trial's release, or a failing ``kiosk doctor`` switch
``current`` back to the previous release and record ``rolled_back`` with the reason, which
the agent then reports. The file operations the updater needs to be power-cut safe (atomic
state writes, atomic link switches) live here too, so there is one copy of them; the updater
imports them (docs/updates.md).
"""

from __future__ import annotations

import argparse
import json
import os
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
    print(f"siheyi-boot-guard: {message}", file=sys.stderr, flush=True)


#: Doctor checks that fail with the network, not with the release: they alone do not roll a
#: trial back (the self-test tap judges the release's own talk with the server).
NETWORK_CHECKS = frozenset({"server", "tls", "session", "clock"})


def run_doctor(kiosk: Path, config: Path | None, timeout_s: float) -> str:
    """ "" when ``kiosk doctor`` passes (or fails only for the network), else why not."""
    command = [str(kiosk), "doctor", "--json"]
    if config is not None:
        command += ["--config", str(config)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"kiosk doctor did not finish within {timeout_s:.0f} s"
    except OSError as exc:
        return f"kiosk doctor could not run: {exc}"
    if done.returncode == 0:
        return ""
    failed = failing_checks(done.stdout)
    if done.returncode == 1 and failed and set(failed) <= NETWORK_CHECKS:
        _log(f"kiosk doctor: only network checks failed ({', '.join(failed)}): not the release")
        return ""
    what = ", ".join(failed)[:300] or done.stdout.strip()[-200:] or done.stderr.strip()[-200:]
    return f"kiosk doctor failed (exit {done.returncode}): {what or 'no output'}"


def failing_checks(stdout: str) -> list[str]:
    """The names of the failed checks in doctor's JSON (``{"ok", "checks": [...]}``)."""
    try:
        report = json.loads(stdout)
    except ValueError:
        return []
    checks = report.get("checks") if isinstance(report, dict) else None
    return [
        str(c.get("name", "?"))
        for c in (checks if isinstance(checks, list) else [])
        if isinstance(c, dict) and c.get("status") == "fail"
    ]


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
            reason = run_doctor(self.current / "bin" / "kiosk", self.config, self.doctor_timeout_s)
        if reason:
            self._roll_back(state, reason)

    def _roll_back(self, state: dict[str, Any], reason: str) -> None:
        """``current`` back to the release that ran before the trial; recorded with why."""
        back = self._fallback(str(state.get("previous") or ""), str(state.get("version", "")))
        if back is None:
            _log(f"trial failed ({reason}) but no working release to return to")
            state.update(state="failed", detail=f"{reason}; nothing to roll back to"[:500])
        else:
            if linked_version(self.current) != back:
                switch_link(self.current, release_target(back))
            _log(f"rolled back to {back}: {reason}")
            state.update(state="rolled_back", detail=reason[:500], running=back)
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
