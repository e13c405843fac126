"""Fetching the voice pack the kiosk's configuration names (docs/voice.md).

Two requests with the kiosk's session: ``GET /v1/device/voice-packs/{sha256}`` says how big
the pack is and carries its signature, then ``…/pack`` streams the zip. The stream is cut
off as soon as it passes the announced size (and never passes
:data:`core.voicepack.MAX_PACK_BYTES`, whatever the server says), so a wrong or hostile
answer costs the kiosk at most 8 MiB of memory. What arrives must hash to the SHA-256 the
configuration named; whether the release key signed it is checked when it is installed
(:meth:`device.acting.packs.PackStore.install`).

Errors: :class:`core.voicepack.VoicePackError` when what the server sent is not that pack
(no use fetching it again), :class:`device.errors.ServerError` when it could not be fetched
now (offline, 429, cut short, 403 ``not_offered`` while the configuration changes: try
again later).
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from core.voicepack import MAX_PACK_BYTES, VoicePackError, check_sha256
from core.wire_voice import VoicePackInfo
from device.errors import ServerUnavailable
from device.link.client import ChunkSink, checked

__all__ = ["PackSource", "download_pack", "pack_path"]

#: A pack is small: a kiosk that cannot fetch it in this long tries at the next heartbeat.
DOWNLOAD_TIMEOUT_S = 60.0


class PackSource(Protocol):
    """What the download needs of the server client (:class:`ServerClient`)."""

    async def get_json(self, path: str, timeout_s: float) -> dict[str, Any]: ...

    async def fetch_chunks(self, url: str, sink: ChunkSink, timeout_s: float) -> None: ...


def pack_path(sha256: str) -> str:
    """The pack's information on the server; its zip is at ``<this>/pack``."""
    return f"/v1/device/voice-packs/{check_sha256(sha256)}"


class _Buffer:
    """Collects the chunks, refusing a byte past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    async def __call__(self, chunk: bytes) -> None:
        if len(self.data) + len(chunk) > self.limit:
            raise VoicePackError(f"the voice pack is larger than the {self.limit} bytes announced")
        self.data += chunk


async def download_pack(
    client: PackSource, sha256: str, timeout_s: float = DOWNLOAD_TIMEOUT_S
) -> tuple[bytes, VoicePackInfo]:
    """The pack named ``sha256`` (its bytes hash to it) and the server's information."""
    path = pack_path(sha256)
    info = checked(await client.get_json(path, timeout_s), VoicePackInfo, path)
    if info.sha256 != sha256:
        raise VoicePackError(f"asked for voice pack {sha256[:12]}, the server described another")
    if not 0 < info.size <= MAX_PACK_BYTES:
        raise VoicePackError(f"voice pack size {info.size} is outside 1..{MAX_PACK_BYTES} bytes")
    buffer = _Buffer(info.size)
    await client.fetch_chunks(f"{path}/pack", buffer, timeout_s)
    data = bytes(buffer.data)
    if len(data) != info.size:  # cut short: the next attempt may get it whole
        raise ServerUnavailable(f"voice pack {sha256[:12]}: {len(data)} of {info.size} bytes")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise VoicePackError(f"the download does not hash to voice pack {sha256[:12]}")
    return data, info
