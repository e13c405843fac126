"""Canonical JSON: the one byte encoding that both ends hash and sign.

Keys sorted, no blanks, UTF-8 text as is (``ensure_ascii=False``). Audit-event hashes,
snapshot and pass signatures and the signed session messages all depend on the kiosk and
the server producing the same bytes, so there is exactly one encoder, here.
(``firmware_bridge.jsonenc`` produces the same bytes under MicroPython.)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    """``value`` as canonical JSON bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def canonical_sha256(value: Any) -> str:
    """SHA-256 hex of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
