"""Real signed voice packs for the kiosk's tests (core.voicepack builds and signs them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.voicepack import build_pack, pack_sha256, sign_pack
from device.errors import ServerUnavailable
from device.link.client import ChunkSink
from device.link.voicepacks import pack_path


@dataclass(frozen=True)
class SignedPack:
    data: bytes
    sha256: str
    signature: str


def release_key() -> tuple[Ed25519PrivateKey, str]:
    """A release key pair: the private key and the public key as the kiosk pins it."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return key, public


def tone(path: Path, hz: float = 180.0, seconds: float = 1.2, rate: int = 22050) -> Path:
    """A short voiced-like recording (a modulated tone), FLAC."""
    t = np.arange(int(seconds * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * hz * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    soundfile.write(str(path), samples, rate, format="FLAC")
    return path


def signed_pack(
    key: Ed25519PrivateKey,
    clips: Mapping[str, Path],
    prompts: Mapping[str, str] | None = None,
    name: str = "test-words",
) -> SignedPack:
    data = build_pack(name, clips, prompts or {})
    sha = pack_sha256(data)
    return SignedPack(data, sha, sign_pack(key, sha))


class FakeServer:
    """The two device routes, answering from memory; ``body`` is what the zip route sends."""

    def __init__(self, pack: SignedPack, **info: Any) -> None:
        self.info = {
            "sha256": pack.sha256,
            "name": "test-words",
            "size": len(pack.data),
            "signature": pack.signature,
            "published_at": "2026-11-28T20:00:00Z",
            "published_by": "admin",
            **info,
        }
        self.body = pack.data
        self.fetched: list[str] = []
        self.offline = False

    async def get_json(self, path: str, timeout_s: float) -> dict[str, Any]:
        if self.offline:
            raise ServerUnavailable(f"{path}: ClientConnectorError: offline")
        assert path == pack_path(str(self.info["sha256"]))
        return dict(self.info)

    async def fetch_chunks(self, url: str, sink: ChunkSink, timeout_s: float) -> None:
        self.fetched.append(url)
        for start in range(0, len(self.body), 1000):
            await sink(self.body[start : start + 1000])
