"""The kiosk's updater: from a release offer to a committed (or rolled back) release.

Order matters for a power cut at any moment (docs/updates.md has the table):

1. the offer is downloaded and verified (:mod:`.download`); nothing changed yet;
2. it is installed into ``releases/<version>.partial`` and renamed when complete
   (:mod:`.install`); the running release is untouched;
3. once the agent is idle (no tap in flight or queued for ``idle_s``) it stops taking taps,
   lets the last one finish, writes the trial into ``state.json`` (atomic), switches
   ``previous`` then ``current`` (atomic links) and exits: systemd starts the new release,
   whose boot guard counts the start and runs ``kiosk doctor``;
4. the new agent runs a self-test tap (:mod:`.selftest`): it commits, or it writes why it
   fails, switches ``current`` back, writes ``rolled_back`` and exits into the old release.

Until the switch the old agent serves the gate; the switch and the exit happen together
while no tap runs, because a running agent must not lazily import modules of another
release from behind a link that moved. Every state is reported in the heartbeat
(``Heartbeat.update``) until the server has stored the final one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from core import wire
from core.releases import ReleaseError
from device.errors import ServerError
from device.update import state as records
from device.update.bootguard import (
    CURRENT,
    PREVIOUS,
    linked_version,
    release_target,
    release_works,
    switch_link,
)
from device.update.download import ReleaseSource, download_release
from device.update.install import (
    Builder,
    InstallError,
    NoSpace,
    VenvInstaller,
    check_space,
    install_release,
    prune_releases,
)
from device.update.settings import UpdateSettings
from device.update.state import UpdateRecord

log = logging.getLogger(__name__)


def _never_idle() -> float | None:
    return None


class Updater:
    """Takes offers from heartbeat answers and carries them through, one at a time.

    The runtime connects it to the agent: ``idle_for`` (seconds since the last tap ended,
    None while one runs or waits), ``drain`` (stop taking taps, finish the last),
    ``self_test`` ("" or why the release fails) and ``announce`` (one heartbeat now). It sets
    ``exit_requested`` when the process must end for systemd to start the other release.
    """

    def __init__(
        self,
        settings: UpdateSettings,
        source: ReleaseSource,
        *,
        running_version: str,
        builder: Builder | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.running_version = running_version
        self._source = source
        self._builder = builder or VenvInstaller(
            settings.python,
            settings.wheelhouse,
            settings.index_url,
            settings.install_timeout_s,
        )
        self._poll_s = poll_s
        self._record = records.load(settings.state_path)
        self._progress: UpdateRecord | None = None  # downloading / installing, not written
        self._offer: wire.UpdateOffer | None = None
        self._wake = asyncio.Event()
        self._leaving = False
        self.exit_requested = asyncio.Event()
        self.idle_for: Callable[[], float | None] = _never_idle
        self.drain: Callable[[], Awaitable[None]] | None = None
        self.self_test: Callable[[], Awaitable[str]] | None = None
        self.announce: Callable[[], Awaitable[object]] | None = None

    @property
    def root(self) -> Path:
        return Path(self.settings.root)

    # -- what the heartbeat carries ------------------------------------------------------
    def report(self) -> wire.UpdateReport | None:
        """The state to report: progress, the trial, or a final state the server has not
        acknowledged yet (None once it has)."""
        if self._progress is not None:
            return self._progress.report()
        record = self._record
        if record is None or (record.final and record.acked):
            return None
        return record.report()

    async def delivered(self, sent: Any) -> None:
        """A heartbeat carrying ``sent`` was stored by the server: a final state it carried
        need not be reported again (written, so a restart does not report it either)."""
        record = self._record
        if record is None or not record.final or record.acked or not isinstance(sent, dict):
            return
        if msgspec.to_builtins(record.report()) != sent:
            return
        record.acked = True
        await asyncio.to_thread(records.save, self.settings.state_path, record)

    # -- offers ------------------------------------------------------------------------------
    def offer(self, offer: wire.UpdateOffer) -> None:
        """An offer from a heartbeat answer: taken up by :meth:`run` when it is new to us."""
        if self._wanted(offer):
            self._offer = offer
            self._wake.set()

    def _wanted(self, offer: wire.UpdateOffer) -> bool:
        """Not what runs, and not a release that already failed or rolled back here."""
        if not self.settings.enabled or self._leaving or offer.version == self.running_version:
            return False
        record = self._record
        return record is None or not record.declines(offer.version, offer.sha256)

    async def run(self) -> None:
        """Settle a trial of this release first, then carry out offers as they come. A bug
        here must not take the agent down: it is logged, and the boot guard and the next
        offer deal with whatever state it left."""
        try:
            await self._settle_trial()
        except Exception:
            log.exception("settling the trial failed; the boot guard judges it at next start")
        while not self._leaving:
            await self._wake.wait()
            self._wake.clear()
            offer, self._offer = self._offer, None
            if offer is None or not self._wanted(offer):  # it may have failed meanwhile
                continue
            try:
                await self._apply(offer)
            except Exception as exc:
                log.exception("update to %s failed unexpectedly", offer.version)
                await self._fail(offer, f"{type(exc).__name__}: {exc}")

    async def _apply(self, offer: wire.UpdateOffer) -> None:
        self._progress = records.new_record(offer.version, "downloading", offer.sha256)
        try:
            self._check_way_back()
            await asyncio.to_thread(self._prepare, offer)
            wheel = await download_release(
                self._source, offer, self.settings.downloads, self.settings.release_key
            )
            self._progress = records.new_record(offer.version, "installing", offer.sha256)
            try:
                await install_release(self._builder, wheel, self.root, offer.version, offer.sha256)
            finally:
                await asyncio.to_thread(wheel.unlink, missing_ok=True)
            await self._switch_to(offer)
        except ServerError as exc:  # the server could not deliver: the next offer retries
            log.warning("release %s not downloaded, will retry: %s", offer.version, exc)
            self._progress = records.new_record(
                offer.version, "downloading", offer.sha256, f"retrying: {exc}"
            )
        except NoSpace as exc:  # reported as a failure, tried again once there is room
            await self._fail(offer, f"{type(exc).__name__}: {exc}", retry=True)
        except (ReleaseError, InstallError, ValueError, OSError) as exc:
            await self._fail(offer, f"{type(exc).__name__}: {exc}")

    async def _fail(self, offer: wire.UpdateOffer, why: str, *, retry: bool = False) -> None:
        """A release refused or not installable: recorded, reported, and (unless ``retry``)
        never tried again as is."""
        log.error("release %s refused: %s", offer.version, why)
        self._progress = None
        self._record = records.new_record(offer.version, "failed", offer.sha256, why[:500])
        self._record.retry = retry
        try:
            await asyncio.to_thread(records.save, self.settings.state_path, self._record)
        except OSError as exc:  # reported all the same; only a restart forgets it
            log.error("cannot write the update state: %s", exc)

    def _prepare(self, offer: wire.UpdateOffer) -> None:
        """Room for the release, and no wheels of earlier attempts lying about."""
        downloads = self.settings.downloads
        if downloads.is_dir():
            for stale in downloads.iterdir():
                stale.unlink(missing_ok=True)
        check_space(self.root, downloads, offer.size)

    def _check_way_back(self) -> str | None:
        """The release ``current`` points at: an update needs one to come back to (a kiosk
        run from a clone, not installed under ``root``, is never updated)."""
        back = linked_version(self.root / CURRENT)
        if not release_works(self.root, back):
            raise InstallError(f"{self.root / CURRENT} is no installed release: no way back")
        return back

    async def _switch_to(self, offer: wire.UpdateOffer) -> None:
        """Trial written, links switched and exit requested, all while no tap runs."""
        back = self._check_way_back()
        await self._quiesce()
        try:  # drained: whatever happens now, the process restarts (into a working release)
            record = records.new_record(offer.version, "trial", offer.sha256)
            record.previous = back
            await asyncio.to_thread(records.save, self.settings.state_path, record)
            self._record, self._progress = record, None
            await asyncio.to_thread(self._switch_links, offer.version, back)
            log.warning("switched to release %s on trial; restarting", offer.version)
        finally:
            await self._leave()

    def _switch_links(self, version: str, back: str | None) -> None:
        if back is not None:
            switch_link(self.root / PREVIOUS, release_target(back))
        switch_link(self.root / CURRENT, release_target(version))

    # -- the trial -----------------------------------------------------------------------
    async def _settle_trial(self) -> None:
        """This release on trial: commit it when the self-test passes, else go back."""
        record = self._record
        if record is None or record.state != "trial":
            return
        if record.version != self.running_version:
            log.warning(
                "trial of %s but %s runs: left to the boot guard",
                record.version,
                self.running_version,
            )
            return
        why = await self.self_test() if self.self_test is not None else ""
        if why:
            await self._roll_back(record, f"self-test failed: {why}")
            return
        record.state, record.detail, record.at = "committed", None, round(time.time(), 3)
        await asyncio.to_thread(records.save, self.settings.state_path, record)
        removed = await asyncio.to_thread(prune_releases, self.root)
        log.info("release %s committed (removed old releases: %s)", record.version, removed)

    async def _roll_back(self, record: UpdateRecord, why: str) -> None:
        """``current`` back to the previous release; the reason is written before the switch,
        so a power cut in between still ends rolled back (the boot guard finishes it)."""
        log.error("release %s fails its trial: %s", record.version, why)
        back = next(
            (
                v
                for v in (record.previous, linked_version(self.root / PREVIOUS))
                if release_works(self.root, v)
            ),
            None,
        )
        if back is None:
            record.state, record.detail = "failed", f"{why}; nothing to roll back to"[:500]
            record.at = round(time.time(), 3)
            await asyncio.to_thread(records.save, self.settings.state_path, record)
            return
        await self._quiesce()
        try:  # a failure here still restarts: the boot guard finishes the rollback
            record.failing = why[:500]
            await asyncio.to_thread(records.save, self.settings.state_path, record)
            await asyncio.to_thread(switch_link, self.root / CURRENT, release_target(back))
            record.state, record.detail, record.failing = "rolled_back", why[:500], None
            record.running, record.at = back, round(time.time(), 3)
            await asyncio.to_thread(records.save, self.settings.state_path, record)
        finally:
            await self._leave()

    # -- leaving -----------------------------------------------------------------------------
    async def _quiesce(self) -> None:
        """Wait until no tap has run for ``idle_s``, then stop taking taps and let the last
        one (one that slipped in meanwhile) finish: from here on no tap can start."""
        while True:
            idle = self.idle_for()
            if idle is not None and idle >= self.settings.idle_s:
                break
            await asyncio.sleep(self._poll_s)
        if self.drain is not None:
            await self.drain()

    async def _leave(self) -> None:
        """Tell the server where we stand (best effort) and ask the process to end."""
        self._leaving = True
        if self.announce is not None:
            try:
                await asyncio.wait_for(self.announce(), 5.0)
            except Exception as exc:  # the next agent reports it anyway
                log.info("could not report the update before restarting: %s", exc)
        self.exit_requested.set()
