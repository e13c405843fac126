"""Tiny stand-ins for releases, the server and pip, so update tests run in a second or two.

A fake release is a directory ``releases/<version>/bin/kiosk``: a shell script that prints
its version and answers ``doctor`` with the exit status (and JSON) stored beside it. The
fake builder makes one in a real subprocess, as the venv installer does.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core import wire
from core.releases import sign_release
from device.link.client import ChunkSink
from device.update.bootguard import release_target, switch_link
from device.update.install import run_niced

KIOSK_SCRIPT = """#!/bin/sh
here=$(dirname "$0")
if [ "$1" = doctor ]; then
  echo "$@" >> "$here/../doctor_args"
  if [ -e "$here/../doctor_old" ] && echo "$@" | grep -q -- --quiet-audio; then
    echo "kiosk: error: unrecognized arguments: --quiet-audio" >&2
    exit 2
  fi
  cat "$here/../doctor.err" >&2 2>/dev/null
  cat "$here/../doctor.json" 2>/dev/null
  exit "$(cat "$here/../doctor_exit" 2>/dev/null || echo 0)"
fi
cat "$here/../version"
"""

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEY_HEX = KEY.public_key().public_bytes_raw().hex()


def write_release(
    path: Path, version: str, doctor_exit: int = 0, failed: Sequence[str] = ()
) -> Path:
    """A working fake release at ``path`` (a ``releases/<version>`` or a ``.partial``)."""
    (path / "bin").mkdir(parents=True, exist_ok=True)
    kiosk = path / "bin" / "kiosk"
    kiosk.write_text(KIOSK_SCRIPT)
    kiosk.chmod(0o755)
    (path / "version").write_text(version + "\n")
    set_doctor(path, doctor_exit, failed)
    return path


def set_doctor(
    path: Path, exit_status: int, failed: Sequence[str] = (), warned: Sequence[str] = ()
) -> None:
    """What the release's ``kiosk doctor --json`` prints and exits with."""
    (path / "doctor_exit").write_text(str(exit_status))
    checks = [{"name": n, "status": "fail", "detail": "", "fix": ""} for n in failed]
    checks += [{"name": n, "status": "warn", "detail": "", "fix": ""} for n in warned]
    (path / "doctor.json").write_text(json.dumps({"ok": not failed, "checks": checks}))


def doctor_runs(path: Path) -> list[str]:
    """The argument lines the release's ``kiosk doctor`` was run with, oldest first."""
    runs = path / "doctor_args"
    return runs.read_text().splitlines() if runs.exists() else []


def install_first(root: Path, version: str = "1.0") -> None:
    """What install.sh leaves: one release, ``current`` and ``previous`` pointing at it."""
    write_release(root / "releases" / version, version)
    switch_link(root / "current", release_target(version))
    switch_link(root / "previous", release_target(version))


def running(root: Path) -> str:
    """What ``<root>/current/bin/kiosk`` says it is; AssertionError when it cannot start."""
    done = subprocess.run([str(root / "current" / "bin" / "kiosk")], capture_output=True, text=True)
    assert done.returncode == 0, done
    return done.stdout.strip()


def wheel_bytes(version: str) -> bytes:
    """Stands in for a wheel: the fake builder reads the version back out of it."""
    return f"fake wheel of {version}\n".encode()


def offer_for(
    version: str,
    data: bytes | None = None,
    *,
    size: int | None = None,
    signature: str | None = None,
    sha256: str | None = None,
) -> wire.UpdateOffer:
    data = wheel_bytes(version) if data is None else data
    filename = f"siheyi-{version}-py3-none-any.whl"
    digest = sha256 or hashlib.sha256(data).hexdigest()
    return wire.UpdateOffer(
        version=version,
        filename=filename,
        sha256=digest,
        signature=signature or sign_release(KEY, version, filename, digest),
        size=len(data) if size is None else size,
        url=f"/v1/device/releases/{version}/wheel",
    )


class FakeSource:
    """The server's release download: serves ``data`` in small chunks."""

    def __init__(self, data: bytes, chunk: int = 7) -> None:
        self.data = data
        self.chunk = chunk
        self.fetched: list[str] = []

    async def fetch_chunks(self, url: str, sink: ChunkSink, timeout_s: float) -> None:
        self.fetched.append(url)
        for i in range(0, len(self.data), self.chunk):
            await sink(self.data[i : i + self.chunk])


class FakeBuilder:
    """Builds a fake release in a subprocess (``sleep_s``: a long install to kill)."""

    def __init__(
        self,
        doctor_exit: int = 0,
        sleep_s: float = 0.0,
        reached: Path | None = None,
        version: str = "",
    ) -> None:
        self.version = version  # "": read from the fake wheel
        self.doctor_exit = doctor_exit
        self.sleep_s = sleep_s
        self.reached = reached  # written "installing" once the release is half built

    async def build(self, wheel: Path, partial: Path) -> None:
        version = self.version or wheel.read_text().split()[-1]
        code = (
            "import sys, time; from pathlib import Path; "
            "from tests.update.fakes import write_release; "
            f"write_release(Path(sys.argv[1]), {version!r}, {self.doctor_exit}); "
            + (f"Path({str(self.reached)!r}).write_text('installing'); " if self.reached else "")
            + f"time.sleep({self.sleep_s})"
        )
        env_root = str(Path(__file__).resolve().parents[2])
        await run_niced(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {env_root!r}); " + code,
                str(partial),
            ],
            "fake install",
            60.0,
        )


def state(state_dir: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((state_dir / "update" / "state.json").read_text())
    return data
