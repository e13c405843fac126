"""What a wheel says its version is: the ``Version:`` of its METADATA and its file name's.

A kiosk reports the version it runs from the installed METADATA, and the server offers a
release until the kiosk reports running it. A release published under any other version
than its METADATA's would never be seen as installed: the kiosk would be offered it, switch
to it and be offered it again, for ever. So the upload's version must be the METADATA's,
character for character, and the file name's version (``dist-VERSION-…whl``, where a
wheel writes ``-`` as ``_``) must be the same.
"""

from __future__ import annotations

import io
import zipfile

from core.releases import ReleaseError, wheel_metadata_version
from server.releases.errors import ReleaseProblem


def metadata_version(wheel: bytes) -> str:
    """The ``Version:`` of the wheel's one top-level ``*.dist-info/METADATA``."""
    try:
        with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
            return wheel_metadata_version(archive)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ReleaseProblem(f"wheel: not a wheel with a METADATA file ({exc})") from exc
    except ReleaseError as exc:
        raise ReleaseProblem(str(exc)) from exc


def filename_version(filename: str) -> str:
    """The version part of a wheel file name (``siheyi-1.5.0-py3-none-any.whl``)."""
    parts = filename.removesuffix(".whl").split("-")
    if len(parts) not in (5, 6):
        raise ReleaseProblem(f"filename: {filename!r} is not name-version-[build-]py-abi-platform")
    return parts[1]


def check_versions(version: str, filename: str, wheel: bytes) -> None:
    """Refuse an upload whose version is not its wheel's METADATA version, or whose file
    name names another version (see the module's docstring for why)."""
    inside = metadata_version(wheel)
    if version != inside:
        raise ReleaseProblem(
            f"version: the wheel's METADATA says {inside!r}, not {version!r}; kiosks report"
            " the METADATA version, so they would never see this release installed"
        )
    named = filename_version(filename)
    if named != inside.replace("-", "_"):
        raise ReleaseProblem(
            f"filename: {filename!r} names version {named!r}, the METADATA says {inside!r}"
        )
