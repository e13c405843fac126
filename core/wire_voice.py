"""Bodies of the voice pack API (``/v1/admin/voice-packs``, ``/v1/device/voice-packs``).

Shared by the server's handlers, ``kiosk voice pack`` (the admin's CLI) and the kiosk's
download, so the three cannot drift; the OpenAPI document is generated from them. The pack
format itself is :mod:`core.voicepack`.
"""

from __future__ import annotations

from msgspec import Struct

from core.wire import Count, Hash64, SignatureHex


class VoicePackUpload(Struct):
    """``POST /v1/admin/voice-packs``: a signed pack. ``pack`` is the zip's bytes, base64
    (standard alphabet, padded) in JSON; the server checks ``size``, ``sha256`` and the
    archive against them and, with ``[releases] release_key`` set, the signature."""

    sha256: Hash64
    signature: SignatureHex
    size: Count
    pack: bytes


class VoicePackInfo(Struct):
    """A stored pack (without its bytes): ``name`` is the one in its ``pack.json``."""

    sha256: str
    name: str
    size: int
    signature: str
    published_at: str
    published_by: str


class VoicePackList(Struct):
    """``GET /v1/admin/voice-packs``: newest first."""

    packs: list[VoicePackInfo]


class VoicePackPublished(Struct):
    """The pack as stored; ``created`` is false when the very same pack was there."""

    pack: VoicePackInfo
    created: bool
