"""A rollout's progress: where its kiosks stand, and the rules that halt it or open the
next wave (docs/releases.md, "Waves").

The kiosks a rollout covers are those whose most specific layer is the rollout's
(:mod:`server.releases.layers`); *offered* are those of waves ``0..wave``. Over the offered
kiosks that reported on this version (any update state):

* **halt** when at least one failed (``failed`` or ``rolled_back``; not a ``failed`` the
  kiosk will retry, :func:`is_failure`) and the failed share of those reporting is above
  ``failure_threshold``: a 1 % first wave of 200 kiosks with one
  failure halts at any threshold below 50 %;
* else **advance** when every offered kiosk that is online runs the version (it reported
  ``committed`` or its heartbeat says it runs it) or failed it (within the threshold, a
  failed kiosk stays on its old version and is not offered this one again) and the wave has
  been open ``soak_s``, and at least one kiosk of the current wave runs it (a wave of
  kiosks all offline proves nothing; an empty wave — 1 % of 50 kiosks — opens the next):
  the next wave opens; after the last wave the rollout is *done*. Offline kiosks do not
  hold a rollout back otherwise: they are offered the version when they come back.

Evaluated when a kiosk reports a final state (failures at once, commits at most every
:data:`COMMIT_EVAL_S` per process) and on every status read, under the rollouts lock in one
transaction, so processes agree; one step per evaluation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.wire_releases import RolloutInfo, WaveStatus
from server.events import presence
from server.releases import rollouts
from server.releases.layers import covers, load_layers
from server.releases.waves import band, percentile, wave_of
from server.storage.connection import Connection
from server.storage.db import lock, transaction

FAILED = ("failed", "rolled_back")


def is_failure(state: str | None, retry: bool) -> bool:
    """Whether a report is a verdict against its version: ``rolled_back``, or ``failed``
    unless the kiosk will try again (``UpdateReport.retry``: an interrupted download, a full
    disk say nothing about the release, and must not halt a good rollout)."""
    return state in FAILED and not (retry and state == "failed")


#: Seconds between two evaluations a process makes for commits of one rollout (an
#: evaluation reads every kiosk the rollout covers: ~0.2 s at 21,390 kiosks on SQLite).
COMMIT_EVAL_S = 10.0


@dataclass(frozen=True)
class KioskFacts:
    """What a rollout needs of one kiosk it covers."""

    device_id: str
    site: str
    running: str | None
    version: str | None  # the version its last update report is about
    state: str | None
    online: bool
    retry: bool = False  # the report is a failure the kiosk will try again

    def at(self, version: str) -> bool:
        """Whether the kiosk runs ``version`` for good: it reported committing it, or it
        runs it and reports nothing about it (in trial it runs it, not yet for good)."""
        if self.version == version and self.state is not None:
            return self.state == "committed"
        return self.running == version


def covered(conn: Connection, rollout: RolloutInfo, now: datetime) -> list[KioskFacts]:
    """The (not revoked) kiosks whose desired version this rollout's layer sets."""
    sql = (
        "SELECT d.device_id, d.site, u.running, u.version, u.state, u.retry FROM devices d"
        " LEFT JOIN kiosk_updates u ON u.device_id = d.device_id WHERE d.status <> 'revoked'"
    )
    args: tuple[str, ...] = ()
    if rollout.scope == "site":
        sql, args = sql + " AND d.site = ?", (rollout.target,)
    elif rollout.scope == "device":
        sql, args = sql + " AND d.device_id = ?", (rollout.target,)
    rows = conn.execute(sql, args).fetchall()
    layers = load_layers(conn)
    online = presence.online_devices(conn, now)
    return [
        KioskFacts(str(r[0]), str(r[1]), r[2], r[3], r[4], str(r[0]) in online, bool(r[5]))
        for r in rows
        if covers(layers, rollout.scope, rollout.target, str(r[0]), str(r[1]))
    ]


def offered(rollout: RolloutInfo, kiosks: list[KioskFacts]) -> list[KioskFacts]:
    """The kiosks of waves ``0..wave``."""
    if rollout.state == "done":
        return kiosks
    bound = rollout.waves[min(rollout.wave, len(rollout.waves) - 1)]
    return [k for k in kiosks if percentile(rollout.id, k.device_id) < bound]


def verdict(rollout: RolloutInfo, kiosks: list[KioskFacts], now: datetime) -> str | None:
    """``halt: <why>``, ``advance``, or None (stay) for a running rollout."""
    wave = offered(rollout, kiosks)
    reporting = [k for k in wave if k.version == rollout.version]
    failures = sum(1 for k in reporting if is_failure(k.state, k.retry))
    if failures and failures / len(reporting) > rollout.failure_threshold:
        return (
            f"halt: {failures} of {len(reporting)} kiosk(s) reporting on {rollout.version}"
            f" in {_waves_open(rollout.wave)} failed (threshold {rollout.failure_threshold:.0%})"
        )
    opened = datetime.fromisoformat(rollout.wave_started_at)
    if now < opened + timedelta(seconds=rollout.soak_s):
        return None
    if not all(k.at(rollout.version) or _failed(k, rollout.version) for k in wave if k.online):
        return None
    newest = [k for k in wave if wave_of(rollout.waves, percentile(rollout.id, k.device_id))
              == rollout.wave]  # fmt: skip
    if newest and not any(k.at(rollout.version) for k in newest):
        return None  # no kiosk of this wave has shown the version to work yet
    return "advance"


def _waves_open(wave: int) -> str:
    return "wave 1" if wave == 0 else f"waves 1-{wave + 1}"


def _failed(kiosk: KioskFacts, version: str) -> bool:
    """Failed ``version`` for good (a kiosk that will retry holds its wave like one that is
    still installing)."""
    return kiosk.version == version and is_failure(kiosk.state, kiosk.retry)


def evaluate(conn: Connection, rollout_id: int, now: datetime) -> RolloutInfo:
    """Apply :func:`verdict` to a running rollout, one step, in a transaction of its own."""
    stamp = presence.iso(now)
    with transaction(conn):
        lock(conn, rollouts.LOCK)
        rollout = rollouts.find(conn, rollout_id)
        if rollout.state != "running":
            return rollout
        decided = verdict(rollout, covered(conn, rollout, now), now)
        if decided is None:
            return rollout
        if decided.startswith("halt: "):
            conn.execute(
                "UPDATE rollouts SET state = 'halted', halted_reason = ? WHERE id = ?",
                (decided.removeprefix("halt: "), rollout_id),
            )
        elif rollout.wave + 1 >= len(rollout.waves):
            conn.execute(
                "UPDATE rollouts SET state = 'done', ended_at = ? WHERE id = ?", (stamp, rollout_id)
            )
        else:
            conn.execute(
                "UPDATE rollouts SET wave = wave + 1, wave_started_at = ? WHERE id = ?",
                (stamp, rollout_id),
            )
        return rollouts.find(conn, rollout_id)


def status(conn: Connection, rollout: RolloutInfo, now: datetime) -> RolloutInfo:
    """The rollout with per-wave counts and the versions its kiosks run per site."""
    kiosks = covered(conn, rollout, now)
    waves = [
        WaveStatus(i, *band(rollout.waves, i), open=_open(rollout, i), kiosks=0)
        for i in range(len(rollout.waves))
    ]
    versions: dict[str, Counter[str]] = {}
    for kiosk in kiosks:
        _count(waves[wave_of(rollout.waves, percentile(rollout.id, kiosk.device_id))],
               kiosk, rollout.version)  # fmt: skip
        versions.setdefault(kiosk.site, Counter())[kiosk.running or "unknown"] += 1
    rollout.wave_status = waves
    rollout.versions = {site: dict(sorted(c.items())) for site, c in sorted(versions.items())}
    return rollout


def _open(rollout: RolloutInfo, index: int) -> bool:
    return rollout.state == "done" or (rollout.state == "running" and index <= rollout.wave)


def _count(wave: WaveStatus, kiosk: KioskFacts, version: str) -> None:
    wave.kiosks += 1
    if kiosk.at(version):
        wave.committed += 1
    elif kiosk.version == version and kiosk.state is not None and not _retrying(kiosk):
        setattr(wave, kiosk.state, getattr(wave, kiosk.state) + 1)
    elif wave.open:
        wave.offered += 1


def _retrying(kiosk: KioskFacts) -> bool:
    """A failure the kiosk will try again: counted as offered (it is offered again)."""
    return kiosk.state == "failed" and kiosk.retry
