"""The kiosk's update record: ``<state_dir>/update/state.json``, written atomically.

It holds what must survive a restart or a power cut: the release on trial (or the outcome of
the last one), the release to return to, how many starts the trial has had (counted by the
boot guard) and whether the server has seen the outcome. Downloading and installing are not
written: after a power cut the server simply offers the release again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from core import wire
from core.idnumbers import redact
from device.update.bootguard import Unreadable, read_state, write_json_atomic

log = logging.getLogger(__name__)

#: States after which nothing more happens to the release: reported until the server saw them.
FINAL: tuple[wire.UpdateState, ...] = ("committed", "failed", "rolled_back")
STATES: tuple[str, ...] = ("downloading", "installing", "trial", *FINAL)


@dataclass
class UpdateRecord:
    """One release's progress on this kiosk (the JSON keys are these field names)."""

    version: str
    state: wire.UpdateState
    sha256: str = ""
    previous: str | None = None  # the release ``current`` pointed at before the trial
    boots: int = 0  # starts of the trial so far (the boot guard counts them)
    detail: str | None = None
    at: float | None = None
    retry: bool = False  # a failure the updater may try again (interrupted, not refused)
    failing: str | None = None  # a trial being rolled back: why (the guard finishes it)
    running: str | None = None  # what the boot guard returned to
    acked: bool = False  # the server has stored this final state

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def report(self) -> wire.UpdateReport:
        """What the heartbeat carries (``Heartbeat.update``). The detail may quote pip or a
        doctor: masked, since the server refuses a heartbeat holding a clear ID number.
        ``retry`` marks a ``failed`` that is no verdict on the release (out of disk, an
        interrupted switch): the kiosk tries it again, and a rollout must not count it."""
        detail = redact(self.detail)[:500] if self.detail else None
        retry = self.retry and self.state == "failed"
        return wire.UpdateReport(self.version, self.state, detail, self.at, retry=retry)

    def declines(self, version: str, sha256: str) -> bool:
        """True when this record says the offered release must not be tried again: it was
        rolled back here, or refused (bad signature, hash, size, install)."""
        if (self.version, self.sha256) != (version, sha256):
            return False
        return self.state == "rolled_back" or (self.state == "failed" and not self.retry)


def new_record(
    version: str, state: wire.UpdateState, sha256: str = "", detail: str | None = None
) -> UpdateRecord:
    return UpdateRecord(version, state, sha256=sha256, detail=detail, at=round(time.time(), 3))


def load(path: Path) -> UpdateRecord | None:
    """The record, None when there is none or it cannot be understood (then the boot guard
    has already judged ``current`` afresh)."""
    try:
        data = read_state(path)
    except Unreadable as exc:
        log.error("update state %s unreadable: %s", path, exc)
        return None
    if data is None:
        return None
    known = {f.name for f in fields(UpdateRecord)}
    values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
    if values.get("state") not in STATES or not isinstance(values.get("version"), str):
        log.error("update state %s has no valid version and state: ignored", path)
        return None
    try:
        return UpdateRecord(**values)
    except TypeError as exc:  # pragma: no cover - every field has a default but the two above
        log.error("update state %s: %s", path, exc)
        return None


def save(path: Path, record: UpdateRecord) -> None:
    """Write the record durably (temporary file, fsync, rename, fsync of the directory)."""
    write_json_atomic(path, asdict(record))
