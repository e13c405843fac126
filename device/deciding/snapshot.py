"""Pre-loading the kiosk cache with a signed snapshot of the site's expected people.

So that a first-time tap during an outage still decides, the kiosk periodically fetches
`GET /v1/snapshot`, checks its Ed25519 signature against the server key from its own bundle
(never a key that came over the network), checks that it is for this kiosk's site and not
older than the cache's hard maximum age, and only then swaps it into the cache in one
transaction. A snapshot that fails any check is ignored: the cache keeps what it had.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core import wire
from core.canonical import canonical_json
from device.deciding.cache import KioskCache, parse_time
from device.errors import KioskError, ServerError, SnapshotError
from device.link.client import ServerClient

log = logging.getLogger(__name__)


def verify_snapshot(
    document: Mapping[str, Any], server_key_hex: str, site: str, *, now: float, max_age_s: float
) -> tuple[dict[str, Any], float]:
    """The signed snapshot object and its generation time, or SnapshotError."""
    snapshot, signature = document.get("snapshot"), document.get("signature")
    if not isinstance(snapshot, dict) or not isinstance(signature, str):
        raise SnapshotError("not a snapshot document")
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(server_key_hex))
        key.verify(bytes.fromhex(signature), canonical_json(snapshot))
    except (ValueError, InvalidSignature) as exc:
        raise SnapshotError("snapshot signature does not verify") from exc
    if snapshot.get("site") != site:
        raise SnapshotError(f"snapshot is for site {snapshot.get('site')!r}, not {site!r}")
    generated = parse_time(snapshot.get("generated_at"))
    if generated is None:
        raise SnapshotError("snapshot has no generated_at")
    at = generated.timestamp()
    if now - at > max_age_s or at - now > 300:
        raise SnapshotError(f"snapshot generated at {generated.isoformat()} is out of date")
    if not isinstance(snapshot.get("people"), dict):
        raise SnapshotError("snapshot has no people")
    return snapshot, at


def checked_snapshot(
    document: Mapping[str, Any], server_key_hex: str, site: str, *, now: float, max_age_s: float
) -> tuple[wire.Snapshot, float]:
    """:func:`verify_snapshot`, then the signed object checked against the API's model.

    The signature is checked first and over the document as received: the typed copy is
    what the cache is filled from, never what is verified.
    """
    snapshot, generated_at = verify_snapshot(
        document, server_key_hex, site, now=now, max_age_s=max_age_s
    )
    try:
        return msgspec.convert(snapshot, wire.Snapshot), generated_at
    except msgspec.ValidationError as exc:
        raise SnapshotError(f"snapshot breaks the API: {wire.error_text(exc, 'snapshot')}") from exc


def facts_from_snapshot(entry: wire.SnapshotPerson, policy: Mapping[str, Any]) -> dict[str, Any]:
    """One snapshot person in the cache's facts format (same shape as a verify answer).

    ``policy`` is the snapshot's whole policy document, colour table included, so an offline
    decision applies the site's colours as the server would.
    """
    return {
        "health_code": {"status": _present(entry.colour), "colour": entry.colour},
        "nat": {
            "status": _present(entry.nat_result, entry.nat_sampled_at),
            "result": entry.nat_result,
            "sampled_at": entry.nat_sampled_at,
        },
        "vaccination": {
            "status": _present(entry.doses),
            "doses": entry.doses,
            "last_dose_at": entry.last_dose_at,
        },
        "travel": {
            "status": _present(entry.travel_flagged),
            "flagged": entry.travel_flagged,
            "area": entry.area or "",
        },
        "policy": dict(policy),
    }


def _present(*values: object) -> str:
    return "ok" if all(v is not None for v in values) else "missing"


class SnapshotLoader:
    """Fetch, verify and install snapshots periodically; log once on failure and recovery."""

    def __init__(
        self,
        client: ServerClient,
        cache: KioskCache,
        *,
        server_key_hex: str,
        site: str,
        interval_s: float,
    ) -> None:
        self._client = client
        self._cache = cache
        self._key = server_key_hex
        self._site = site
        self._interval = interval_s
        self.installed = 0
        self.last_error = ""

    async def load_once(self) -> int:
        document = await self._client.get_json("/v1/snapshot", timeout_s=30.0)
        snapshot, generated_at = await asyncio.to_thread(
            checked_snapshot,
            document,
            self._key,
            self._site,
            now=dt.datetime.now(dt.UTC).timestamp(),
            max_age_s=self._cache.max_age_s,
        )
        policy = msgspec.to_builtins(snapshot.policy)
        people = {
            alias: facts_from_snapshot(entry, policy) for alias, entry in snapshot.people.items()
        }
        key_id = str(document.get("key_id", ""))
        count = await self._cache.replace_snapshot(people, generated_at, key_id)
        self.installed = count
        return count

    async def run(self) -> None:
        while True:
            try:
                count = await self.load_once()
                if self.last_error:
                    log.info("site snapshot loading recovered")
                self.last_error = ""
                log.debug("installed a snapshot of %d people", count)
            except (ServerError, KioskError) as exc:
                if str(exc) != self.last_error:
                    log.warning("site snapshot not installed, keeping the cache: %s", exc)
                self.last_error = str(exc)
            await asyncio.sleep(self._interval)
