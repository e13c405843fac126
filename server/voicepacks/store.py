"""Voice packs in SQL: check an upload, store it once, list packs, read one back.

The server checks what it can without a secret: the upload's size and SHA-256 against its
bytes, the archive and its ``pack.json`` with the very :func:`core.voicepack.read_pack`
every kiosk runs, and, when ``[releases] release_key`` pins the fleet's public release key,
the signature, so a pack no kiosk would take is refused at upload rather than at every
kiosk it is offered to. A pack is named by its SHA-256: the same bytes again are a no-op;
the same bytes with another signature a conflict (kiosks must agree on what a pack is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.errors import SettingError
from core.voicepack import MAX_PACK_BYTES, pack_sha256, read_pack, verify_pack
from core.wire_voice import VoicePackInfo, VoicePackUpload
from server.storage.connection import Connection
from server.voicepacks.errors import PackConflict, PackProblem

_COLUMNS = "sha256, name, size, signature, published_at, published_by"
#: How to get an unknown pack, in the CLI's words (setting ``voice.pack`` is done from a
#: shell: ``kiosk provision config set`` or ``kiosk voice pack publish --site …``).
PUBLISH_FIRST = "publish it first (kiosk voice pack publish)"


def _info(row: Sequence[Any]) -> VoicePackInfo:
    return VoicePackInfo(str(row[0]), str(row[1]), int(row[2]), str(row[3]), str(row[4]),
                         str(row[5]))  # fmt: skip


def check_upload(upload: VoicePackUpload, release_key: str) -> str:
    """The pack's name, once its bytes are what the upload claims, its archive is one every
    kiosk reads and (with ``release_key``) its signature is the release key's; else
    :class:`PackProblem` saying which."""
    if len(upload.pack) != upload.size:
        raise PackProblem(f"size: the pack has {len(upload.pack)} bytes, not {upload.size}")
    if upload.size > MAX_PACK_BYTES:
        raise PackProblem(f"size: {upload.size} bytes, a pack may have {MAX_PACK_BYTES}")
    if pack_sha256(upload.pack) != upload.sha256:
        raise PackProblem("sha256: does not match the pack's bytes")
    try:  # the signature first: nothing but the release key's packs is even unpacked
        if release_key:
            verify_pack(release_key, upload.sha256, upload.signature)
        pack = read_pack(upload.pack)
    except SettingError as exc:
        raise PackProblem(str(exc)) from exc
    return pack.manifest.name


def publish(
    conn: Connection, upload: VoicePackUpload, name: str, by: str, now: str
) -> tuple[VoicePackInfo, bool]:
    """Store a checked upload (in the caller's transaction); (pack, whether it is new)."""
    found = find(conn, upload.sha256)
    if found is not None:
        if found.signature != upload.signature:
            raise PackConflict(
                f"voice pack {upload.sha256[:12]} is stored with another signature"
                f" (published {found.published_at} by {found.published_by})"
            )
        return found, False
    conn.execute(
        f"INSERT INTO voice_packs ({_COLUMNS}, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (upload.sha256, name, upload.size, upload.signature, now, by, upload.pack),
    )
    found = find(conn, upload.sha256)
    assert found is not None
    return found, True


def find(conn: Connection, sha256: str) -> VoicePackInfo | None:
    """One pack's facts (not its bytes), or None."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM voice_packs WHERE sha256 = ?", (sha256,)).fetchone()
    return None if row is None else _info(row)


def list_packs(conn: Connection) -> list[VoicePackInfo]:
    """Every pack, newest first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM voice_packs ORDER BY published_at DESC, sha256"
    ).fetchall()
    return [_info(row) for row in rows]


def pack_bytes(conn: Connection, sha256: str) -> bytes | None:
    """A pack's zip (at most 8 MiB), or None."""
    row = conn.execute("SELECT data FROM voice_packs WHERE sha256 = ?", (sha256,)).fetchone()
    return None if row is None else bytes(row[0])


def exists(conn: Connection, sha256: str) -> bool:
    """Whether the pack is stored (the fleet registry refuses a ``voice.pack`` naming one
    that is not: no kiosk could download it)."""
    row = conn.execute("SELECT 1 FROM voice_packs WHERE sha256 = ?", (sha256,)).fetchone()
    return row is not None
