"""What every check may look at: the configuration, the bundle, the machine's probes.

The machine is reached through :class:`Probes` (who the agent runs as, the NTP state, free
disk space, which processes hold a device), the way gpiozero takes a ``pin_factory``: the
defaults look at the real system, tests pass their own. Limits that decide ok/warn/fail are
one :class:`Thresholds` value with documented defaults (docs/doctor.md), not config keys: a
kiosk does not need to tune them, a test does.

Blocking work (serial ports, OpenCV, ``aplay``) runs on a daemon thread with a deadline:
``asyncio.to_thread`` would let a wedged driver call keep the interpreter from exiting, and
doctor must finish within seconds whatever the hardware does.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from core.bundle import Bundle
from device.config import DeviceConfig

T = TypeVar("T")

#: What stopping the agent for a full hardware check takes (the unit deploy/ installs).
STOP_AGENT = "sudo systemctl stop siheyi-agent (then run doctor, then start it again)"

#: Per-check time limit, seconds (doctor runs its checks side by side, so the whole run
#: takes about the slowest check, never the sum).
DEFAULT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Thresholds:
    """Where a healthy kiosk ends and a failing one begins (docs/doctor.md)."""

    disk_warn_bytes: int = 512 * 1024 * 1024
    disk_fail_bytes: int = 64 * 1024 * 1024
    disk_warn_fraction: float = 0.10
    disk_fail_fraction: float = 0.02
    backlog_warn_events: int = 1_000
    backlog_fail_events: int = 50_000
    backlog_warn_age_s: float = 3600.0
    backlog_fail_age_s: float = 86400.0
    dead_letters_warn: int = 1
    dead_letters_fail: int = 1_000
    camera_frames: int = 3


@dataclass(frozen=True)
class UserInfo:
    """The account the agent runs as: its name, uid and every group id it belongs to."""

    name: str
    uid: int
    gids: frozenset[int]

    def group_names(self) -> set[str]:
        """The names of the user's groups (ids without a name are left out)."""
        names = set()
        for gid in self.gids:
            with contextlib.suppress(KeyError):
                names.add(grp.getgrgid(gid).gr_name)
        return names


def user_info(name: str | None = None) -> UserInfo:
    """The named user (default: the one running doctor) from the account database."""
    entry = pwd.getpwnam(name) if name else pwd.getpwuid(os.geteuid())
    gids = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
    if name is None:
        gids.update(os.getgroups())
    return UserInfo(entry.pw_name, entry.pw_uid, frozenset(gids))


def ntp_synchronised() -> bool | None:
    """systemd's view of NTP (``timedatectl show -p NTPSynchronized``); None when there is
    no timedatectl or no systemd to ask (containers, other init systems)."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=2.0,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip().lower()
    if out.returncode != 0 or value not in ("yes", "no"):
        return None
    return value == "yes"


def process_holders(path: str) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the other processes that have ``path`` open (``/proc``;
    processes of other users are only seen by root, which is fine: the agent runs as the same
    user as a doctor run for it, or doctor runs as root)."""
    try:
        target = os.stat(path)
    except OSError:
        return []
    holders: list[tuple[int, str]] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        if _holds(entry, target):
            holders.append((int(entry.name), _cmdline(entry)))
    return holders


def _holds(proc: Path, target: os.stat_result) -> bool:
    try:
        fds = list((proc / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            st = fd.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False


def _cmdline(proc: Path) -> str:
    try:
        raw = (proc / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip() or "?"


def is_agent(cmdline: str) -> bool:
    """Whether a command line is the kiosk agent (``kiosk device run``)."""
    words = cmdline.split()
    return "device" in words and "run" in words and any("kiosk" in w for w in words)


def agent_processes() -> list[int]:
    """Pids of running kiosk agents (``kiosk device run``), this process left out."""
    me = os.getpid()
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and int(entry.name) != me and is_agent(_cmdline(entry))
    ]


@dataclass(frozen=True)
class Probes:
    """The machine as doctor sees it; tests replace single fields."""

    user: Callable[[], UserInfo] = user_info
    ntp: Callable[[], bool | None] = ntp_synchronised
    statvfs: Callable[[str], os.statvfs_result] = os.statvfs
    holders: Callable[[str], list[tuple[int, str]]] = process_holders
    agents: Callable[[], list[int]] = agent_processes
    wall_clock: Callable[[], float] = time.time


@dataclass
class DoctorContext:
    """Shared by the checks of one run; later checks read what earlier ones found."""

    config: DeviceConfig
    pin_factory: Any = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    probes: Probes = field(default_factory=Probes)
    thresholds: Thresholds = field(default_factory=Thresholds)
    #: Play silence, not the test prompt (the boot guard runs doctor at a gate with people).
    quiet_audio: bool = False
    bundle: Bundle | None = None
    bundle_error: str = ""
    #: The server answered /healthz (None: not checked yet or no bundle).
    server_up: bool | None = None
    #: Server clock minus ours, from the Date header of its answer (seconds).
    server_offset_s: float | None = None
    #: Another process (the agent, usually) holds the reader's port.
    port_busy: bool = False

    @property
    def state_dir(self) -> Path:
        return Path(self.config.state_dir)

    @property
    def server_url(self) -> str:
        """The URL the agent would use: the config's override, else the bundle's."""
        if self.config.server_url:
            return self.config.server_url
        return self.bundle.server_url if self.bundle is not None else ""

    @property
    def prompt_dir(self) -> Path:
        voice = self.config.voice
        return Path(voice.cache_dir) if voice.cache_dir else self.state_dir / "prompts"

    async def blocking(self, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        """Run ``fn`` on a daemon thread; TimeoutError after ``timeout_s`` (default: the
        check limit) while the thread, if wedged, is left behind and dies with the process."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(value: T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)  # type: ignore[arg-type]

        def run() -> None:
            value: T | None = None
            error: BaseException | None = None
            try:
                value = fn()
            except BaseException as exc:  # handed to the waiting check, not lost
                error = exc
            with contextlib.suppress(RuntimeError):  # the run ended meanwhile: nobody waits
                loop.call_soon_threadsafe(settle, value, error)

        threading.Thread(target=run, name="doctor-check", daemon=True).start()
        async with asyncio.timeout(timeout_s if timeout_s is not None else self.timeout_s):
            return await future
