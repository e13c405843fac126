"""The audit event's chain rules, shared by the kiosk journal and the server's ingest.

Every event carries the hash of its predecessor (``prev_hash``; the first event of a
journal epoch carries :data:`GENESIS_HASH`) and its own ``hash``: SHA-256 of the canonical
JSON of the event without its ``hash`` field. The wire shape of an event is
``core.wire.AuditEventIn``; the kinds of event are below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.canonical import canonical_sha256

GENESIS_HASH = "0" * 64

#: decision: a tap's outcome; fault: a device fault; guard: a guard's action (a remote gate
#: opening, with who and why); system: start, stop, configuration and journal events.
KINDS: frozenset[str] = frozenset({"decision", "fault", "guard", "system"})

#: Integer fields that are counters, not data: exempt from the clear-ID search of integers
#: (``core.idnumbers.find_clear_ids``), since ``mono_ns`` passes 18 digits after ~3 years.
COUNTER_FIELDS: frozenset[str] = frozenset({"seq", "mono_ns"})


def hash_event(event: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``event`` without its ``hash`` field.

    So ``hash_event(e) == e["hash"]`` checks a stored or received event.
    """
    return canonical_sha256({k: v for k, v in event.items() if k != "hash"})
