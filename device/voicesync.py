"""Remote voice settings and voice packs, from heartbeat answers to the kiosk's voice.

The agent hands every configuration's ``voice.*`` settings to :meth:`VoiceSync.apply`:

* a pack the configuration names and the kiosk does not have is fetched
  (device.link.voicepacks), verified against the pinned release key and installed
  (device.acting.packs); a kiosk without a release key refuses every pack, and says so
  once in its log;
* a pack that cannot be fetched now (offline, 429) leaves the words as they are and is
  :attr:`~VoiceSync.pending`: the agent calls :meth:`VoiceSync.retry` after each heartbeat,
  even when the configuration's version did not change;
* a pack the kiosk's disk will not take (full, read-only SD card) is pending too, but tried
  again only after a wait that doubles with each failure, from about one heartbeat to an
  hour (:data:`FIRST_DISK_WAIT_S`, :data:`MAX_DISK_WAIT_S`), so a broken card does not cost
  a download of up to 8 MiB at every heartbeat; another pack, or success, starts afresh;
* a change the kiosk cannot prepare (the new words do not render: espeak, a full disk) leaves
  the old words speaking and is tried again after the same doubling wait;
* a pack that is not the signed one (signature, hash, archive) is refused with an ERROR, the
  old words stay, and it is not fetched again until the configuration names another;
* schedule and languages apply at once, whatever happens to the pack;
* the settings in effect are saved, so the next start without network speaks them.

Each call returns a short report (what happened to the pack, what was refused) for the
agent's ``config_applied`` journal event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from core.voicepack import VoicePackError
from device.acting.packs import InstalledPack, PackStore, RemoteVoice, StoredVoice
from device.acting.tuning import VoiceRecipe
from device.acting.voice import Voice
from device.errors import ServerError
from device.link.voicepacks import PackSource, download_pack

__all__ = ["FIRST_DISK_WAIT_S", "MAX_DISK_WAIT_S", "VoiceSync"]

log = logging.getLogger(__name__)

#: The wait before the first new try of a pack the disk refused: a little under one
#: heartbeat at the default 30 s, so that heartbeat tries; it doubles at each failure.
FIRST_DISK_WAIT_S: Final = 25.0
#: Why a change is tried again when the kiosk itself could not prepare its words.
UNPREPARED: Final = "the new words could not be prepared"
#: The longest wait between tries of a pack the disk refused.
MAX_DISK_WAIT_S: Final = 3600.0


@dataclass(frozen=True)
class _DiskWait:
    """A pack the disk refused ``failures`` times in a row; tried again at ``due``."""

    sha256: str
    failures: int
    due: float
    why: str

    @staticmethod
    def after(previous: _DiskWait | None, sha: str, why: str, now: float) -> _DiskWait:
        failures = previous.failures + 1 if previous and previous.sha256 == sha else 1
        wait = min(MAX_DISK_WAIT_S, FIRST_DISK_WAIT_S * 2.0 ** min(failures - 1, 20))
        return _DiskWait(sha, failures, now + wait, why)


class VoiceSync:
    """Keeps ``voice`` speaking what the remote configuration asks, within what is verified."""

    def __init__(
        self,
        voice: Voice,
        recipe: VoiceRecipe,
        store: PackStore,
        client: PackSource,
        release_key: str,
        stored: StoredVoice | None = None,
        *,
        timeout_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.voice = voice
        self.recipe = recipe
        self.store = store
        self.client = client
        self.release_key = release_key
        self.timeout_s = timeout_s
        #: Settings whose pack could not be fetched yet (None: nothing to retry).
        self.pending: RemoteVoice | None = None
        self._lock = asyncio.Lock()
        self._warned_no_key = False
        self._refused: tuple[str, str] | None = None  # (sha256, why): not fetched again
        self._disk: _DiskWait | None = None  # a pack the disk refused: when to try again
        #: What keeps the wanted pack from being spoken (``pending: …``/``refused: …``),
        #: for the heartbeat; None once it is (or no pack is wanted).
        self.problem: str | None = None
        self._clock = clock
        # What the voice was built with at start (``stored``, or the same files read again).
        self._applied, self._pack = stored or store.stored(release_key)

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def apply(self, wanted: RemoteVoice) -> dict[str, Any]:
        """Make the voice speak ``wanted`` as far as it can now; a report for the journal."""
        async with self._lock:
            report: dict[str, Any] = {}
            pack = await self._pack_for(wanted, report)
            effective = wanted
            if wanted.pack:  # the pack in hand: the wanted one, or the old one meanwhile
                effective = replace(wanted, pack=pack.sha256 if pack is not None else None)
            self.pending = wanted if report.get("pack", "").startswith("pending") else None
            if not await self._retune(effective, pack, report):
                # The kiosk itself could not prepare the new words (espeak, a full disk):
                # tried again after later heartbeats, waiting longer each time.
                self.pending = wanted
                self._local_failure(wanted.pack or "", UNPREPARED)
            self.problem = _problem(report)
            return report

    async def retry(self) -> dict[str, Any] | None:
        """Try the pending pack again (None: nothing pending, a change is under way, or the
        disk refused the pack and its wait is not over)."""
        wanted = self.pending
        if wanted is None or self.busy or self._disk_wait(wanted.pack or "") is not None:
            return None
        return await self.apply(wanted)

    def _disk_wait(self, sha: str | None) -> _DiskWait | None:
        """The wait under way for ``sha`` after the disk refused it (None: try now)."""
        disk = self._disk
        if disk is None or disk.sha256 != sha or self._clock() >= disk.due:
            return None
        return disk

    async def _pack_for(self, wanted: RemoteVoice, report: dict[str, Any]) -> InstalledPack | None:
        """The pack to speak with: the wanted one if it is (or now gets) installed, else the
        one in use; ``report["pack"]`` says which and why."""
        sha = wanted.pack
        if self._disk is not None and self._disk.sha256 != (sha or ""):
            self._disk = None  # another pack (or none): its own tries start afresh
        if not sha:
            report["pack"] = "none"
            return None
        current = self._pack
        if current is not None and current.sha256 == sha:
            report["pack"] = f"unchanged {current.label}"
            return current
        if not self.release_key:
            if not self._warned_no_key:
                log.error(
                    "voice pack %s refused: this kiosk pins no release key ([update] "
                    "release_key), so it cannot tell a signed pack from another; it keeps "
                    "its own words",
                    sha[:12],
                )
                self._warned_no_key = True
            report["pack"] = "refused: no release key is pinned ([update] release_key)"
            return current
        if self._refused is not None and self._refused[0] == sha:
            report["pack"] = f"refused: {self._refused[1]}"
            return current
        self._refused = None
        disk = self._disk_wait(sha)
        if disk is not None:
            wait = disk.due - self._clock()
            report["pack"] = _cut(
                f"pending: cannot write it ({disk.why}); next try in {wait:.0f} s"
            )
            return current
        installed = await self._fetch(sha, report)
        if installed is None:
            return current
        self._pack = installed
        return installed

    async def _fetch(self, sha: str, report: dict[str, Any]) -> InstalledPack | None:
        """Download, verify and install ``sha``; None when it is not installed now (why is
        in ``report["pack"]``, and a refusal or a disk failure is remembered)."""
        try:
            data, info = await download_pack(self.client, sha, self.timeout_s)
            installed = await asyncio.to_thread(
                self.store.install, data, info.signature, self.release_key
            )
        except ServerError as exc:
            log.warning("voice pack %s not fetched now, tried again later: %s", sha[:12], exc)
            report["pack"] = _cut(f"pending: {exc}")
            return None
        except VoicePackError as exc:
            log.error("voice pack %s refused, the previous words stay: %s", sha[:12], exc)
            self._refused = (sha, str(exc))
            report["pack"] = _cut(f"refused: {exc}")
            return None
        except OSError as exc:
            self._disk_failed(sha, exc)
            report["pack"] = _cut(f"pending: cannot write it ({exc})")
            return None
        if self._disk is not None:
            log.info(
                "voice pack %s installed after %d disk failure(s)", sha[:12], self._disk.failures
            )
            self._disk = None
        report["pack"] = f"installed {installed.label}"
        return installed

    def _local_failure(self, sha: str, why: str) -> _DiskWait:
        """Wait longer before each new try of a change this kiosk keeps failing to make."""
        self._disk = _DiskWait.after(self._disk, sha, why, self._clock())
        return self._disk

    def _disk_failed(self, sha: str, exc: OSError) -> None:
        """Wait longer before each new try of a pack the disk keeps refusing."""
        disk = self._local_failure(sha, str(exc))
        log.error(
            "voice pack %s not installed (disk, %d failure(s) in a row): %s; tried again in %.0f s",
            sha[:12],
            disk.failures,
            exc,
            disk.due - self._clock(),
        )

    async def _retune(
        self, effective: RemoteVoice, pack: InstalledPack | None, report: dict[str, Any]
    ) -> bool:
        """Retune the voice when what it should speak changed; save what is in effect.
        False when the voice could not be changed (it keeps speaking the old words)."""
        parts, refused = self.recipe.parts(effective, pack)
        if refused:
            log.warning("remote voice settings refused: %s", refused)
            report["refused"] = refused
        if effective == self._applied and parts.pack == self.voice.pack:
            return True
        if not await self.voice.retune(parts):
            report["voice"] = f"not changed: {UNPREPARED}"
            return False
        self._applied = effective
        if pack is None:
            self._pack = None
        try:
            await asyncio.to_thread(self.store.save_settings, effective)
            if pack is None:
                await asyncio.to_thread(self.store.clear)
        except OSError as exc:
            log.error("remote voice settings not saved (a restart forgets them): %s", exc)
        report["voice"] = "changed"
        if self._disk is not None and self._disk.why == UNPREPARED:
            self._disk = None
        return True


def _problem(report: dict[str, Any]) -> str | None:
    """What of a report an operator must see in the heartbeat: a pack not (yet) spoken, or
    new words the kiosk could not prepare."""
    pack = str(report.get("pack", ""))
    if pack.startswith(("pending", "refused")):
        return pack[:200]
    voice = str(report.get("voice", ""))
    return voice[:200] if voice.startswith("not changed") else None


def _cut(text: str) -> str:
    """A report line short enough for the journal."""
    return text[:300]
