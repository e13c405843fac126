"""The agent's user and the device nodes the configuration uses.

Access is judged from the nodes' owner, group and mode bits against the user's groups in the
account database, not with ``os.access``: ``sudo kiosk doctor --user siheyi`` checks the agent's
account, not root's. A node that does not exist (an unplugged camera) is judged by the group
udev gives such devices on Raspberry Pi OS (``dialout``, ``gpio``, ``audio``, ``video``).
"""

from __future__ import annotations

import grp
import os
from pathlib import Path

from device.doctor.context import DoctorContext
from device.doctor.model import CheckResult, fail, ok


def _needs(ctx: DoctorContext) -> list[tuple[str, str, str]]:
    """``(what, device node, conventional group)`` for every device the config uses."""
    config = ctx.config
    needs: list[tuple[str, str, str]] = []
    if "://" not in config.reader.url:
        needs.append(("the reader", config.reader.url, "dialout"))
    gpio = config.gpio
    if (
        gpio.enabled
        and config.reader.wiring == "direct"
        and gpio.pin_factory != "mock"
        and ctx.pin_factory is None
    ):
        node = next((n for n in ("/dev/gpiochip0", "/dev/gpiomem") if os.path.exists(n)), "")
        needs.append(("GPIO", node, "gpio"))
    kind, _, pcm = config.voice.player.partition(":")
    if kind == "aplay" and pcm != "null":
        pcms = sorted(Path("/dev/snd").glob("pcmC*p")) if Path("/dev/snd").is_dir() else []
        needs.append(("audio", str(pcms[0]) if pcms else "", "audio"))
    source = config.camera.source
    if config.camera.enabled and (source.isdigit() or source.startswith("/dev/")):
        needs.append(("the camera", f"/dev/video{source}" if source.isdigit() else source, "video"))
    return needs


def _can_use(st: os.stat_result, uid: int, gids: frozenset[int]) -> bool:
    """Read and write access by permission bits (for any user, not only the running one)."""
    mode = st.st_mode
    if uid == 0:
        return True
    if st.st_uid == uid:
        return mode & 0o600 == 0o600
    if st.st_gid in gids:
        return mode & 0o060 == 0o060
    return mode & 0o006 == 0o006


def check_groups(ctx: DoctorContext) -> CheckResult:
    """The agent's user may open every device the configuration uses."""
    user = ctx.probes.user()
    names = user.group_names()
    missing: list[tuple[str, str]] = []  # (group, why)
    notes: list[str] = []
    for what, node, conventional in _needs(ctx):
        try:
            st = os.stat(node) if node else None
        except OSError:
            st = None
        if st is not None:
            if _can_use(st, user.uid, user.gids):
                continue
            try:
                group = grp.getgrgid(st.st_gid).gr_name
            except KeyError:
                group = str(st.st_gid)
            missing.append((group, f"{what} ({node}, group {group})"))
        elif conventional in names or user.uid == 0:
            continue
        else:
            try:
                grp.getgrnam(conventional)
            except KeyError:
                notes.append(f"no {conventional} group on this system for {what}")
                continue
            missing.append((conventional, f"{what} (group {conventional})"))
    if missing:
        groups = sorted({g for g, _ in missing})
        return fail(
            "groups",
            f"user {user.name} may not use " + ", ".join(w for _, w in missing),
            f"add user {user.name} to group {','.join(groups)}: "
            f"usermod -aG {','.join(groups)} {user.name} (then restart the agent)",
        )
    detail = f"user {user.name} may use every configured device"
    return ok("groups", detail + (f" ({'; '.join(notes)})" if notes else ""))
