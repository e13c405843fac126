"""Moves journal events to the server; deletes only what the server acknowledged.

Upload is at-least-once and the server is idempotent on (device, epoch, seq), so a kiosk
killed between the POST and the delete resends a batch the server simply counts as
duplicates. A batch holds one journal epoch. Events held in memory (a full disk) are sent
like stored ones, so a reachable server acknowledges what the disk could not take.

A batch refused with 400 is narrowed down to the event the server names (or the first one)
and that event alone goes to the journal's dead letters: one poison event must not block
every event behind it (issue 10, part 3).

A revoked or quarantined kiosk keeps draining: the client sends its batches on the audit-only
token the server hands out with the ``403`` (the server stores them flagged), while every tap
decides ``check`` (issue 10, part 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from device.errors import JournalError, ServerError, ServerRejected
from device.link.client import ServerClient, jittered
from device.recording.journal import Journal, event_epoch

log = logging.getLogger(__name__)

Batch = list[dict[str, Any]]
#: ServerRejected's text ends with the server's detail, which names the field refused.
_NAMED_EVENT = re.compile(r"\): events\[(\d+)\]")


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
        self.dead_lettered = 0
        self.failures = 0
        self.last_error = ""

    def poke(self) -> None:
        """Upload soon: a new event was appended."""
        self._wake.set()

    async def drain_once(self) -> int:
        """Send batches until the journal is empty or a batch fails; returns events acked."""
        acked_total = 0
        while True:
            events = _one_epoch(await self._journal.pending(self._batch))
            if not events:
                return acked_total
            sent, answer = await self._send(events)
            if not sent:
                continue  # a poison event went to the dead letters: go on with the rest
            removed = await self._acknowledged(sent, answer)
            acked_total += removed
            self.uploaded += removed
            if removed < len(sent):
                # The server holds less than we sent: do not spin on the same batch.
                return acked_total

    async def _send(self, events: Batch) -> tuple[Batch, dict[str, Any]]:
        """The events the server took and its answer; ``([], {})`` once a refused event
        was moved to the dead letters."""
        try:
            return events, await self._client.upload(events)
        except ServerRejected as exc:
            if exc.status != 400:
                raise
            return await self._narrow(events, exc)

    async def _narrow(self, events: Batch, exc: ServerRejected) -> tuple[Batch, dict[str, Any]]:
        """Send what precedes the event the error names (else the first event) alone:
        either it passes, or it holds the poison, which is narrowed down in turn."""
        named = _NAMED_EVENT.search(str(exc))
        index = int(named.group(1)) if named else 0
        if len(events) > 1:
            return await self._send(events[: index if 0 < index < len(events) else 1])
        poison = events[0]
        log.error("audit event seq %s refused: %s", poison["seq"], exc)
        await self._journal.dead_letter(poison, str(exc))
        self.dead_lettered += 1
        return [], {}

    async def _acknowledged(self, events: Batch, answer: dict[str, Any]) -> int:
        acked = answer.get("acked_seq")
        if not isinstance(acked, int):
            raise ServerError("audit answer without an integer acked_seq")
        breaks = answer.get("chain_breaks") or []
        if breaks:
            log.error("server reports audit chain breaks at seq %s", breaks)
        conflicts = answer.get("conflicts") or []
        if conflicts:
            # The server kept these apart (another journal already used those numbers);
            # they are stored, not lost.
            log.error("server stored conflicting audit events at seq %s", conflicts)
        # A server from before epochs sends no "held": then only acked_seq counts.
        held = [(int(first), int(last)) for first, last in answer.get("held") or []]
        return await self._journal.ack(acked, event_epoch(events[0]), held)

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
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
            # that arrives as the event is set (a poke at shutdown), and this loop then ran
            # on and held the agent's stop for good.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(jittered(backoff)):
                    await self._wake.wait()


def _one_epoch(events: Batch) -> Batch:
    """The leading events of one epoch: the server takes one epoch per batch."""
    if not events:
        return events
    epoch = event_epoch(events[0])
    for i, event in enumerate(events):
        if event_epoch(event) != epoch:
            return events[:i]
    return events
