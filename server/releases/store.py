"""Releases in SQL: store a signed wheel once per version, list them, read a wheel back.

The server checks what it can without a secret: the wheel's size and SHA-256 against the
upload's claims, the version and file name (safe as path parts on a kiosk, and both the
wheel's METADATA version, which is what kiosks report), and, when
``[releases] release_key`` pins the fleet's public release key, the signature too, so a
wheel no kiosk would install is refused at upload rather than at 21,390 kiosks. A version is
stored once: uploading it again with the very same wheel is a no-op, with other bytes a
``409`` (a version names one wheel for ever, or kiosks could disagree on what it is).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from core.errors import SettingError
from core.releases import check_filename, check_version, verify_release
from core.wire_releases import ReleaseInfo, ReleaseUpload
from server.releases.errors import Conflict, NotFound, ReleaseProblem
from server.releases.wheels import check_versions
from server.storage.connection import Connection

_COLUMNS = "version, filename, sha256, signature, size, published_at, published_by"


def _info(row: Sequence[Any]) -> ReleaseInfo:
    return ReleaseInfo(str(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]),
                       str(row[5]), str(row[6]))  # fmt: skip


def check_upload(upload: ReleaseUpload, release_key: str) -> None:
    """Refuse an upload whose bytes are not what it claims, whose version is not its wheel's
    METADATA version (:mod:`server.releases.wheels`), or (with ``release_key``) whose
    signature is not the release key's; the message says which."""
    try:
        check_version(upload.version)
        check_filename(upload.filename)
    except SettingError as exc:
        raise ReleaseProblem(str(exc)) from exc
    if len(upload.wheel) != upload.size:
        raise ReleaseProblem(f"size: the wheel has {len(upload.wheel)} bytes, not {upload.size}")
    if hashlib.sha256(upload.wheel).hexdigest() != upload.sha256:
        raise ReleaseProblem("sha256: does not match the wheel's bytes")
    check_versions(upload.version, upload.filename, upload.wheel)
    if release_key:
        try:
            verify_release(
                release_key, upload.version, upload.filename, upload.sha256, upload.signature
            )
        except SettingError as exc:
            raise ReleaseProblem(f"signature: {exc}") from exc


def publish(conn: Connection, upload: ReleaseUpload, by: str, now: str) -> tuple[ReleaseInfo, bool]:
    """Store a checked upload (in the caller's transaction); (release, whether it is new)."""
    found = find(conn, upload.version)
    if found is not None:
        same = (found.sha256, found.filename, found.signature) == (
            upload.sha256,
            upload.filename,
            upload.signature,
        )
        if not same:
            raise Conflict(
                f"release {upload.version} exists with another wheel ({found.filename},"
                f" sha256 {found.sha256[:16]}…): publish a new version"
            )
        return found, False
    conn.execute(
        f"INSERT INTO releases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (upload.version, upload.filename, upload.sha256, upload.signature, upload.size, now, by),
    )
    conn.execute(
        "INSERT INTO release_wheels (version, wheel) VALUES (?, ?)",
        (upload.version, upload.wheel),
    )
    found = find(conn, upload.version)
    assert found is not None
    return found, True


def find(conn: Connection, version: str) -> ReleaseInfo | None:
    """One release's facts, or None."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM releases WHERE version = ?", (version,)).fetchone()
    return None if row is None else _info(row)


#: How to get an unknown release, in the API's words (the CLI puts its own verb in: an API
#: client has no ``kiosk`` command; provisioning/release_cli.py ``API_TO_CLI``).
PUBLISH_FIRST = "publish it first: POST /v1/admin/releases"


def require(conn: Connection, version: str) -> ReleaseInfo:
    """One release's facts, or :class:`NotFound`."""
    found = find(conn, version)
    if found is None:
        raise NotFound(f"no release {version!r} ({PUBLISH_FIRST})")
    return found


def list_releases(conn: Connection) -> list[ReleaseInfo]:
    """Every release, newest first."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM releases ORDER BY published_at DESC, version DESC")
    return [_info(row) for row in rows.fetchall()]


def wheel_bytes(conn: Connection, version: str) -> bytes | None:
    """The wheel of a release (a few MB), or None."""
    row = conn.execute("SELECT wheel FROM release_wheels WHERE version = ?", (version,)).fetchone()
    return None if row is None else bytes(row[0])
