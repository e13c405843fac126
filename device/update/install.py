"""Installing a verified wheel as a release: a fresh venv beside the running one.

The venv is built in ``releases/<version>.partial`` by subprocesses (niced, so taps keep the
CPU, and never on the event loop), and only renamed to ``releases/<version>`` once pip has
finished, the scripts point at their final place and everything is on disk: a directory
named ``releases/<version>`` is always a complete release, whatever moment the power went.
A left-over ``.partial`` is simply deleted by the next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from device.update.bootguard import (
    CURRENT,
    PREVIOUS,
    RELEASES,
    fsync_dir,
    linked_version,
    release_works,
)

#: Written into a finished release: which wheel it was built from.
MARKER = "siheyi-release.json"
#: How much of a failed command's output a report carries.
OUTPUT_TAIL = 300


class InstallError(Exception):
    """The release could not be installed; the message says where it stopped."""


class NoSpace(InstallError):
    """Not enough free disk for the release: tried again at a later offer."""


class Builder(Protocol):
    """Fills a ``.partial`` directory with a release built from a wheel."""

    async def build(self, wheel: Path, partial: Path) -> None: ...


@dataclass(frozen=True)
class VenvInstaller:
    """``python -m venv`` then ``pip install`` of the wheel, dependencies from the
    wheelhouse (``--no-index --find-links``) or from ``index_url``.

    ``pip`` is the pip command to run against the new venv; empty: the venv's own pip
    (``<venv>/bin/python -m pip``). Tests pass an outer pip with ``--python`` to skip
    bootstrapping pip into every venv.
    """

    python: str
    wheelhouse: str
    index_url: str = ""
    timeout_s: float = 900.0
    pip: Sequence[str] = ()
    niceness: int = 10
    extras: str = "device"  # as install.sh installs the kiosk: the wheel with its kiosk extras

    async def build(self, wheel: Path, partial: Path) -> None:
        """Fill ``partial`` with a venv holding the wheel (raises InstallError)."""
        venv = [self.python, "-m", "venv", *(["--without-pip"] if self.pip else []), str(partial)]
        await self._run(venv, "venv")
        python = str(partial / "bin" / "python")
        pip = [*self.pip, "--python", python] if self.pip else [python, "-m", "pip"]
        wanted = f"{wheel}[{self.extras}]" if self.extras else str(wheel)
        await self._run([*pip, "install", *self._source_args(), wanted], "pip install")

    def _source_args(self) -> list[str]:
        common = ["--no-input", "--disable-pip-version-check", "--no-cache-dir"]
        if self.index_url:
            return [*common, "--index-url", self.index_url, "--find-links", self.wheelhouse]
        return [*common, "--no-index", "--find-links", self.wheelhouse]

    async def _run(self, command: list[str], what: str) -> None:
        await run_niced(command, what, self.timeout_s, self.niceness)


async def run_niced(command: list[str], what: str, timeout_s: float, niceness: int = 10) -> None:
    """Run ``command`` at low priority; InstallError on a failure or after ``timeout_s``."""
    nice = shutil.which("nice")
    argv = [nice, "-n", str(niceness), *command] if nice and niceness else command
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise InstallError(f"{what} did not finish within {timeout_s:.0f} s") from exc
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if proc.returncode != 0:
        tail = output.decode("utf-8", "replace").strip()[-OUTPUT_TAIL:]
        raise InstallError(f"{what} failed (exit {proc.returncode}): {tail}")


async def install_release(
    builder: Builder, wheel: Path, root: Path, version: str, sha256: str
) -> Path:
    """``releases/<version>`` built from ``wheel``: reused when it is already this wheel's,
    refused when it is another build that ``current`` or ``previous`` still points at."""
    releases = root / RELEASES
    final, partial = releases / version, releases / f"{version}.partial"
    if await asyncio.to_thread(_same_build, final, sha256):
        return final
    in_use = {linked_version(root / CURRENT), linked_version(root / PREVIOUS)}
    if version in in_use and final.exists():
        raise InstallError(f"{final} is in use and was built from another wheel")
    await asyncio.to_thread(_clear, final, partial, releases)
    try:
        await builder.build(wheel, partial)
        await asyncio.to_thread(_finish, partial, final, {"version": version, "sha256": sha256})
    except InstallError:  # a failed release is not retried: its half venv would only take disk
        await asyncio.to_thread(shutil.rmtree, partial, True)
        raise
    if not release_works(root, version):
        raise InstallError(f"{final} has no bin/kiosk after the install")
    return final


def _same_build(final: Path, sha256: str) -> bool:
    try:
        marker = json.loads((final / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("sha256") == sha256


def _clear(final: Path, partial: Path, releases: Path) -> None:
    releases.mkdir(parents=True, exist_ok=True)
    for path in (partial, final):
        if path.is_symlink():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)


def _finish(partial: Path, final: Path, marker: dict[str, str]) -> None:
    """Scripts re-pointed at the final path, marker written, everything synced, renamed."""
    if not (partial / "bin" / "kiosk").is_file():
        raise InstallError("the wheel installed no `kiosk` command")
    relocate_scripts(partial / "bin", str(partial), str(final))
    (partial / MARKER).write_text(json.dumps(marker), encoding="utf-8")
    os.sync()  # every file of the venv on disk before its name says it is complete
    os.rename(partial, final)
    fsync_dir(final.parent)


def relocate_scripts(bin_dir: Path, old: str, new: str) -> None:
    """pip writes the venv's absolute path into each script's first lines (the shebang, or
    the ``/bin/sh`` trampoline it uses for long paths): re-point them at the final path."""
    old_b, new_b = old.encode(), new.encode()
    for script in bin_dir.iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        head, sep, rest = data.partition(b"\n")
        second, sep2, rest2 = rest.partition(b"\n")
        if old_b not in head and old_b not in second:
            continue
        fixed = head.replace(old_b, new_b) + sep + second.replace(old_b, new_b) + sep2 + rest2
        mode = script.stat().st_mode
        script.write_bytes(fixed)
        script.chmod(mode)


#: Free space a release needs besides its wheel (a kiosk venv with OpenCV is ~150 MB).
MIN_FREE_BYTES = 400 * 1024 * 1024


def check_space(root: Path, downloads: Path, wheel_size: int) -> None:
    """InstallError unless both disks have room for the wheel and the venv built from it:
    a kiosk whose disk fills up mid-install would have no room for its journal either."""
    for path, need in ((downloads, wheel_size), (root, MIN_FREE_BYTES + 3 * wheel_size)):
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if free < need:
            raise NoSpace(f"{free >> 20} MB free under {path}, an update needs {need >> 20} MB")


def prune_releases(root: Path) -> list[str]:
    """Delete the releases neither ``current`` nor ``previous`` points at (and left-over
    ``.partial`` builds): a Pi's disk holds two venvs, not every release it ever ran."""
    keep = {linked_version(root / CURRENT), linked_version(root / PREVIOUS)}
    removed = []
    try:
        entries = sorted((root / RELEASES).iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.name in keep or entry.is_symlink() or not entry.is_dir():
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    return removed
