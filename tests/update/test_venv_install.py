"""A real install: a fresh venv, pip from a local wheelhouse, renamed into place.

The wheel is a tiny hand-made one whose ``kiosk`` prints its version; pip runs from the test
environment against the new venv (``pip --python``), which saves bootstrapping pip into it.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from device.update.install import InstallError, VenvInstaller, install_release

FILES = {
    "fakekiosk.py": "def main():\n    print('real 2.0')\n",
    "fakekiosk-2.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: fakekiosk\nVersion: 2.0\n",
    "fakekiosk-2.0.dist-info/WHEEL": (
        "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    ),
    "fakekiosk-2.0.dist-info/entry_points.txt": "[console_scripts]\nkiosk = fakekiosk:main\n",
}


def make_wheel(folder: Path, files: dict[str, str]) -> Path:
    wheel = folder / "fakekiosk-2.0-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{name},sha256={digest.decode()},{len(data)}")
            zf.writestr(name, data)
        record.append("fakekiosk-2.0.dist-info/RECORD,,")
        zf.writestr("fakekiosk-2.0.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def installer(tmp_path: Path) -> VenvInstaller:
    (tmp_path / "wheelhouse").mkdir(exist_ok=True)
    return VenvInstaller(
        python=sys.executable,
        wheelhouse=str(tmp_path / "wheelhouse"),
        timeout_s=120,
        pip=[sys.executable, "-m", "pip"],
    )


async def test_a_wheel_becomes_a_release_whose_kiosk_runs_from_its_final_place(
    tmp_path: Path,
) -> None:
    wheel = make_wheel(tmp_path, FILES)
    root = tmp_path / "opt"
    final = await install_release(installer(tmp_path), wheel, root, "2.0", "ab" * 32)
    assert final == root / "releases" / "2.0"
    assert not (root / "releases" / "2.0.partial").exists()
    kiosk = final / "bin" / "kiosk"
    assert b".partial" not in kiosk.read_bytes()
    done = subprocess.run([str(kiosk)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "real 2.0"


async def test_a_wheel_without_a_kiosk_command_is_not_a_release(tmp_path: Path) -> None:
    files = {k: v for k, v in FILES.items() if not k.endswith("entry_points.txt")}
    wheel = make_wheel(tmp_path, files)
    root = tmp_path / "opt"
    with pytest.raises(InstallError, match="no `kiosk` command"):
        await install_release(installer(tmp_path), wheel, root, "2.0", "ab" * 32)
    assert not list((root / "releases").iterdir())  # nor a half one left behind


async def test_a_dependency_missing_from_the_wheelhouse_fails_the_install(tmp_path: Path) -> None:
    files = dict(FILES)
    files["fakekiosk-2.0.dist-info/METADATA"] += "Requires-Dist: no-such-package-h5b\n"
    wheel = make_wheel(tmp_path, files)
    with pytest.raises(InstallError, match="pip install failed"):
        await install_release(installer(tmp_path), wheel, tmp_path / "opt", "2.0", "ab" * 32)
    assert not (tmp_path / "opt" / "releases" / "2.0").exists()
