"""Fetching an offered release and proving it is the one the release key signed.

The wheel is streamed to ``downloads/<filename>.part`` (never held in memory whole), cut off
as soon as it passes the offered size, hashed as it arrives, and renamed to its own name only
once size, SHA-256 and the release-key signature all check. Anything else is deleted and
raised as :class:`core.releases.ReleaseError`: the updater reports it and installs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path
from typing import BinaryIO, Protocol

from core import wire
from core.releases import ReleaseError, check_filename, check_version, verify_release
from device.link.client import ChunkSink

#: No release is larger than this, whatever an offer says (a Pi's disk is small).
MAX_RELEASE_BYTES = 256 * 1024 * 1024
#: A download that takes longer than this is abandoned (and retried at the next offer).
DOWNLOAD_TIMEOUT_S = 600.0


class ReleaseSource(Protocol):
    """What downloading needs of the server client (``ServerClient.fetch_chunks``)."""

    async def fetch_chunks(self, url: str, sink: ChunkSink, timeout_s: float) -> None: ...


class _Sink:
    """Writes chunks to the file (off the event loop), hashing and counting them."""

    def __init__(self, out: BinaryIO, limit: int) -> None:
        self._out = out
        self._limit = limit
        self.size = 0
        self.digest = hashlib.sha256()

    async def __call__(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._limit:
            raise ReleaseError(f"the release is larger than the {self._limit} bytes offered")
        self.digest.update(chunk)
        await asyncio.to_thread(self._out.write, chunk)


def check_offer(offer: wire.UpdateOffer, release_key: str) -> None:
    """Refuse an offer before fetching anything: no key pinned, a name or size that can't be."""
    if not release_key:
        raise ReleaseError("no release key is pinned ([update] release_key): nothing is installed")
    check_version(offer.version)
    check_filename(offer.filename)
    if not 0 < offer.size <= MAX_RELEASE_BYTES:
        raise ReleaseError(f"offered size {offer.size} is outside 1..{MAX_RELEASE_BYTES} bytes")


async def download_release(
    source: ReleaseSource,
    offer: wire.UpdateOffer,
    downloads: Path,
    release_key: str,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """The verified wheel in ``downloads``; ReleaseError when it is not the signed release,
    ServerError when the server could not deliver it (try again later)."""
    check_offer(offer, release_key)
    await asyncio.to_thread(downloads.mkdir, parents=True, exist_ok=True)
    part = downloads / f"{offer.filename}.part"
    try:
        out = await asyncio.to_thread(part.open, "wb")
        try:
            sink = _Sink(out, offer.size)
            await source.fetch_chunks(offer.url, sink, timeout_s)
            await asyncio.to_thread(_flush, out)
        finally:
            await asyncio.to_thread(out.close)
        _check(offer, release_key, sink.size, sink.digest.hexdigest())
        wheel = downloads / offer.filename
        await asyncio.to_thread(part.replace, wheel)
        return wheel
    except BaseException:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(part.unlink, missing_ok=True)
        raise


def _flush(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


def _check(offer: wire.UpdateOffer, release_key: str, size: int, sha256: str) -> None:
    if size != offer.size:
        raise ReleaseError(f"downloaded {size} bytes, the offer said {offer.size}")
    if sha256 != offer.sha256:
        raise ReleaseError(f"the download's SHA-256 {sha256[:12]}… is not the offered one")
    verify_release(release_key, offer.version, offer.filename, sha256, offer.signature)
