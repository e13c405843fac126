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

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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


def facts_from_snapshot(entry: Mapping[str, Any], policy: Mapping[str, Any]) -> dict[str, Any]:
    """One snapshot person in the cache's facts format (same shape as a verify answer)."""

    def present(*keys: str) -> str:
        return "ok" if all(entry.get(k) is not None for k in keys) else "missing"

    return {
        "health_code": {"status": present("colour"), "colour": entry.get("colour")},
        "nat": {
            "status": present("nat_result", "nat_sampled_at"),
            "result": entry.get("nat_result"),
            "sampled_at": entry.get("nat_sampled_at"),
        },
        "vaccination": {
            "status": present("doses"),
            "doses": entry.get("doses"),
            "last_dose_at": entry.get("last_dose_at"),
        },
        "travel": {
            "status": present("travel_flagged"),
            "flagged": entry.get("travel_flagged"),
            "area": entry.get("area") or "",
        },
        "policy": {
            "nat_window_hours": policy.get("nat_window_hours", 48.0),
            "min_doses": policy.get("min_doses", 0),
        },
    }


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
            verify_snapshot,
            document,
            self._key,
            self._site,
            now=dt.datetime.now(dt.UTC).timestamp(),
            max_age_s=self._cache.max_age_s,
        )
        policy = snapshot.get("policy") if isinstance(snapshot.get("policy"), dict) else {}
        assert isinstance(policy, dict)
        people = {
            str(alias): facts_from_snapshot(entry, policy)
            for alias, entry in snapshot["people"].items()
            if isinstance(entry, dict)
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
