"""Tiny stand-in wheels for the install tests: built in a moment, installed offline.

``siheyi-<version>`` has a ``kiosk`` console script that prints its version and, with the
``device`` or ``server`` extra, requires ``siheyi-testdep`` (a second wheel), so the tests
see install.sh fetch a dependency into the wheelhouse and install from it without an index.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

DEPENDENCY = "siheyi_testdep"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(
    folder: Path, name: str, version: str, files: dict[str, str], metadata: str = ""
) -> Path:
    """A pure-Python wheel holding ``files``, with a RECORD pip accepts."""
    info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n{metadata}"
    )
    contents[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    lines = [_record_line(path, text.encode()) for path, text in contents.items()]
    lines.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = "\n".join(lines) + "\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in contents.items():
            archive.writestr(member, text)
    return path


def siheyi_wheel(folder: Path, version: str) -> Path:
    """A ``siheyi`` wheel whose ``kiosk --version`` prints ``siheyi <version>``."""
    info = f"siheyi-{version}.dist-info"
    code = (
        f"__version__ = {version!r}\n\n"
        "def main():\n"
        f"    import {DEPENDENCY}\n"
        "    print('siheyi', __version__)\n"
    )
    metadata = (
        "Provides-Extra: device\nProvides-Extra: server\n"
        f"Requires-Dist: {DEPENDENCY}; extra == 'device'\n"
        f"Requires-Dist: {DEPENDENCY}; extra == 'server'\n"
    )
    return make_wheel(
        folder,
        "siheyi",
        version,
        {
            "siheyi/__init__.py": code,
            f"{info}/entry_points.txt": "[console_scripts]\nkiosk = siheyi:main\n",
        },
        metadata,
    )


def dependency_wheel(folder: Path) -> Path:
    return make_wheel(folder, DEPENDENCY, "1.0", {f"{DEPENDENCY}.py": ""})
