"""Moves journal events to the server; deletes only what the server acknowledged.

Upload is at-least-once and the server is idempotent on (device, seq), so a kiosk killed
between the POST and the delete resends a batch the server simply counts as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from device.errors import JournalError, ServerError
from device.link.client import ServerClient, jittered
from device.recording.journal import Journal

log = logging.getLogger(__name__)


class Uploader:
    """Background task: drain the journal in batches, back off while the server is away."""

    def __init__(
        self,
        journal: Journal,
        client: ServerClient,
        *,
        interval_s: float = 2.0,
        batch_size: int = 200,
        max_backoff_s: float = 60.0,
    ) -> None:
        self._journal = journal
        self._client = client
        self.interval_s = interval_s
        self._batch = batch_size
        self._max_backoff = max_backoff_s
        self._wake = asyncio.Event()
        self.uploaded = 0
        self.failures = 0
        self.last_error = ""

    def poke(self) -> None:
        """Upload soon: a new event was appended."""
        self._wake.set()

    async def drain_once(self) -> int:
        """Send batches until the journal is empty or a batch fails; returns events acked."""
        acked_total = 0
        while True:
            events = await self._journal.pending(self._batch)
            if not events:
                return acked_total
            answer = await self._client.upload(events)
            acked = answer.get("acked_seq")
            if not isinstance(acked, int):
                raise ServerError("audit answer without an integer acked_seq")
            breaks = answer.get("chain_breaks") or []
            if breaks:
                log.error("server reports audit chain breaks at seq %s", breaks)
            conflicts = answer.get("conflicts") or []
            if conflicts:
                # The server kept these apart (another journal already used those numbers,
                # e.g. after this kiosk's storage was replaced); they are stored, not lost.
                log.error("server stored conflicting audit events at seq %s", conflicts)
            removed = await self._journal.ack(acked)
            acked_total += removed
            self.uploaded += removed
            if removed == 0 or acked < events[-1]["seq"]:
                # The server stored less than we sent: do not spin on the same batch.
                return acked_total

    async def run(self) -> None:
        backoff = self.interval_s
        while True:
            try:
                await self.drain_once()
            except Exception as exc:  # the uploader must outlive any one failure
                if not isinstance(exc, ServerError | JournalError):
                    log.exception("unexpected upload failure")
                self.failures += 1
                if str(exc) != self.last_error:
                    log.warning("audit upload failed, will retry: %s", exc)
                self.last_error = str(exc)
                backoff = min(backoff * 2, self._max_backoff)
                retry_after = getattr(exc, "retry_after", None)
                if isinstance(retry_after, int | float) and retry_after > backoff:
                    backoff = float(retry_after)  # the server asked us to wait (429/503)
            else:
                if self.last_error:
                    log.info("audit upload recovered")
                self.last_error = ""
                backoff = self.interval_s
            self._wake.clear()
            if self.last_error:
                # While the server is away new events must not cut the backoff short.
                await asyncio.sleep(jittered(backoff))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=jittered(backoff))
