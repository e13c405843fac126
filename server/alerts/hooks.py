"""What the rest of the server calls: the ``observe_*`` hooks and the ``alerts_ctx`` task.

The hooks take facts the server learns anyway (a heartbeat, a kiosk going quiet or coming
back, an audit upload) and raise or clear alerts from them. They are cheap on the hot path:
a heartbeat whose verdicts match what this process believes open does no database access
(:mod:`server.alerts.service`). Without :func:`alerts_ctx` (an app built without it) they
do nothing.

``alerts_ctx`` (a cleanup context) makes the process's :class:`AlertService`, then runs the
time-based rules every :data:`TICK_S` and the webhook sender.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from server.alerts import rules, webhook
from server.alerts.service import AlertService, iso
from server.alerts.settings import AlertSettings
from server.alerts.store import Alert, new_id
from server.appkeys import CLOCK, CONFIG, DATABASE
from server.fleet.devices import Device

log = logging.getLogger(__name__)

ALERTS = web.AppKey("alerts", AlertService)
#: Settings for this app instead of the configuration's ``[alerts]`` (tests, tools).
ALERT_SETTINGS = web.AppKey("alert_settings", AlertSettings)
#: Seconds between two runs of the time-based rules and re-reads of the open alerts.
TICK_S = 5.0
#: Another interval for this app (tests that run :func:`tick` themselves set it long).
ALERT_TICK_S = web.AppKey("alert_tick_s", float)
#: Alerts of revoked kiosks are cleared and invalid-tap buckets purged every this many ticks.
PURGE_EVERY = 12


def settings_of(app: web.Application) -> AlertSettings:
    """``ALERT_SETTINGS`` if set, else the configuration's ``[alerts]`` (defaults if none)."""
    own = app.get(ALERT_SETTINGS)
    if own is not None:
        return own
    configured = getattr(app[CONFIG], "alerts", None)
    return configured if isinstance(configured, AlertSettings) else AlertSettings()


@contextmanager
def _guarded(what: str) -> Iterator[None]:
    """A hook never fails its caller (a heartbeat, an upload): an alert that could not be
    raised now is raised by a later fact or the background check."""
    try:
        yield
    except Exception as exc:
        log.warning("alerts: %s not observed: %s", what, exc)


async def observe_heartbeat(app: web.Application, device: Device, status: dict[str, Any]) -> None:
    """A kiosk's heartbeat (the body as sent): it is online, and its reader, cameras,
    audio, clock, cache and journal backlog are what it says."""
    service = app.get(ALERTS)
    if service is None:
        return
    try:  # not _guarded: this runs on every heartbeat, a generator context costs
        now = service.clock().timestamp()
        verdicts = rules.heartbeat_verdicts(status, now)
        site = service.for_site(device.site)
        verdicts |= service.backlogs.verdict(device.device_id, status, site)
        verdicts["kiosk_offline"] = None
        if service.changes(verdicts, device.device_id):
            await service.apply(verdicts, device.site, device.gate, device.device_id)
    except Exception as exc:
        log.warning("alerts: heartbeat not observed: %s", exc)


async def observe_presence(
    app: web.Application, device_id: str, site: str, gate: str, online: bool
) -> None:
    """A kiosk went quiet (no heartbeat, no live link) or came back. Rare, so it asks the
    database rather than this process's belief: the process that hears a kiosk come back
    is often not the one that saw it go."""
    service = app.get(ALERTS)
    if service is None:
        return
    detail: dict[str, Any] | None = None if online else {"since": iso(service.clock())}
    with _guarded("presence"):
        await service.apply({"kiosk_offline": detail}, site, gate, device_id, trust_belief=False)
    if not online:
        service.backlogs.forget(device_id)


async def observe_audit(
    app: web.Application,
    device: Device,
    chain_breaks: list[int],
    conflicts: list[int],
    invalid_taps: int = 0,
) -> None:
    """An audit upload was stored: its chain breaks and conflicts (seqs, from
    ``IngestResult``) raise or add to the kiosk's ``audit_chain`` alert; its new
    invalid-credential taps count towards the gate's ``invalid_credentials`` rule."""
    service = app.get(ALERTS)
    if service is None:
        return
    with _guarded("audit upload"):
        if chain_breaks or conflicts:
            now = iso(service.clock())
            counts = {"chain_breaks": len(chain_breaks), "conflicts": len(conflicts)}
            detail = {**counts, "last_at": now}
            site, gate = device.site, device.gate
            alert = Alert(new_id(), site, device.device_id, gate, "audit_chain", detail, now, now)
            await service.raise_or_touch(alert)
        if invalid_taps > 0:
            await service.count_invalid(device.site, device.gate, invalid_taps)


def recent_invalid_taps(app: web.Application, outcomes: Iterable[tuple[str | None, str]]) -> int:
    """How many of an upload's events count towards the invalid-credentials rule: the
    ``invalid_credential`` decisions whose wall time is within the longest window (a kiosk
    uploading yesterday's backlog after an outage does not raise today).

    ``outcomes``: (outcome, wall_time ISO 8601) of the events the upload stored.
    """
    s = settings_of(app)
    window = max([s.invalid_window_s] + [o.invalid_window_s or 0 for o in s.sites.values()])
    since = app[CLOCK]() - timedelta(seconds=window)
    count = 0
    for outcome, wall_time in outcomes:
        if outcome != "invalid_credential":
            continue
        try:
            at = datetime.fromisoformat(wall_time)
        except ValueError:
            continue
        if at.tzinfo is not None and at >= since:
            count += 1
    return count


async def alerts_ctx(app: web.Application) -> AsyncIterator[None]:
    """The process's alert service, the time-based rules and the webhook sender."""
    service = AlertService(app, app[DATABASE], settings_of(app), app[CLOCK])
    app[ALERTS] = service
    every = app.get(ALERT_TICK_S, TICK_S)
    tasks = [asyncio.create_task(_tick(service, every), name="alerts-tick")]
    session: aiohttp.ClientSession | None = None
    if service.settings.webhook_sites():
        session = aiohttp.ClientSession()
        tasks.append(asyncio.create_task(webhook.run(service, session), name="alerts-webhook"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if session is not None:
            await session.close()


async def _tick(service: AlertService, every: float) -> None:
    """Refresh what is open and run the time-based rules, until cancelled."""
    turn = 0
    while True:
        await asyncio.sleep(every)
        try:
            await tick(service, purge=turn % PURGE_EVERY == 0)
        except Exception as exc:
            log.warning("alert check failed: %s", exc)
        turn += 1


async def tick(service: AlertService, *, purge: bool = False) -> None:
    """One turn of the background task (tests call it directly)."""
    await service.reconcile_offline()
    alerts = await service.refresh()
    await service.check_time_rules(alerts)
    if purge:
        await service.clear_orphans()
        await service.purge()
