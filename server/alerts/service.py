"""One process's alert machinery: what it believes is open, and raising and clearing.

The database is the truth across processes; :attr:`AlertService.open` is this process's
belief, so that a heartbeat that changes nothing costs no database access at all. It is
corrected three ways: by this process's own changes, by what a raise or clear finds in the
database (a raise that hits an alert another process opened, a clear that finds it
cleared), and by :meth:`refresh` from the background task every few seconds (an alert
another process opened and the facts here now contradict gets cleared within that time).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from server.alerts import store
from server.alerts.rules import Backlogs
from server.alerts.settings import AlertSettings
from server.alerts.store import Alert
from server.events import EVENTS
from server.storage.db import Database

log = logging.getLogger(__name__)

#: Invalid-tap counts are kept in buckets of this many seconds.
BUCKET_S = 10


def emit(app: web.Application, event: str, data: dict[str, Any]) -> None:
    """Publish an ``alert_*`` event. Through the bus itself, not ``server.events.publish``:
    the data has a key ``kind`` (the alert's), which ``publish(app, kind, **data)`` would
    take for its own argument."""
    bus = app.get(EVENTS)
    if bus is not None:
        bus.publish(event, data)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class AlertService:
    """Raise and clear alerts for one app (one process), publishing each change once."""

    def __init__(
        self,
        app: web.Application,
        db: Database,
        settings: AlertSettings,
        clock: Callable[[], datetime],
    ) -> None:
        self.app = app
        self.db = db
        self.settings = settings
        self.clock = clock
        #: (subject, kind) → id of the alerts this process believes open.
        self.open: dict[tuple[str, str], str] = {}
        #: This process's own changes while a refresh reads (None: no refresh running).
        self._during_refresh: dict[tuple[str, str], str | None] | None = None
        self.backlogs = Backlogs()
        #: Set when this process queued a webhook delivery: the sender wakes at once.
        self.wake = asyncio.Event()
        self._sites: dict[str, AlertSettings] = {}

    def for_site(self, site: str) -> AlertSettings:
        found = self._sites.get(site)
        if found is None:
            found = self._sites[site] = self.settings.for_site(site)
        return found

    def _deliver_at(self, site: str) -> float | None:
        """When a change at ``site`` is due at its webhook (now), None without one."""
        return self.clock().timestamp() if self.for_site(site).webhook else None

    def is_open(self, subject: str, kind: str) -> bool:
        return (subject, kind) in self.open

    async def raise_(
        self,
        kind: str,
        site: str,
        gate: str,
        device_id: str | None,
        detail: dict[str, Any],
    ) -> bool:
        """Open an alert unless one of its subject and kind is; whether this call did."""
        now = iso(self.clock())
        alert = Alert(store.new_id(), site, device_id, gate, kind, detail, now, now)
        raised = await self.db.write(store.raise_alert, alert, deliver_at=self._deliver_at(site))
        key = (alert.subject, kind)
        # Not raised: another process's alert is open; its id comes with the next refresh.
        self._believe(key, alert.id if raised else self.open.get(key, ""))
        if raised:
            self._announce("alert_raised", alert)
        return bool(raised)

    async def clear(self, subject: str, kind: str, site: str) -> bool:
        """Clear the open alert of ``subject`` and ``kind``; whether this call did."""
        self._believe((subject, kind), None)
        cleared = await self.db.write(
            store.clear_alert,
            subject,
            kind,
            iso(self.clock()),
            deliver_at=self._deliver_at(site),
        )
        if cleared is None:
            return False
        self._announce("alert_cleared", cleared)
        return True

    async def raise_or_touch(self, alert: Alert) -> None:
        """Raise ``alert`` or add its counts to the open one (audit trouble again)."""
        raised, current = await self.db.write(
            store.raise_or_touch, alert, deliver_at=self._deliver_at(alert.site)
        )
        self._believe((alert.subject, alert.kind), current.id)
        if raised:
            self._announce("alert_raised", alert)

    def changes(self, verdicts: dict[str, dict[str, Any] | None], device_id: str) -> bool:
        """Whether ``verdicts`` differ from what this process believes open (no await:
        the common heartbeat ends here)."""
        open_ = self.open
        return any(
            (detail is not None) != ((device_id, kind) in open_)
            for kind, detail in verdicts.items()
        )

    async def apply(
        self,
        verdicts: dict[str, dict[str, Any] | None],
        site: str,
        gate: str,
        device_id: str,
        *,
        trust_belief: bool = True,
    ) -> None:
        """Bring a kiosk's alerts in line with ``verdicts``. Trusting this process's belief
        (the heartbeat path), only changes touch the database; otherwise (rare facts such
        as a kiosk coming back, which another process may have seen go) a clear is always
        tried."""
        for kind, detail in verdicts.items():
            is_open = self.is_open(device_id, kind)
            if detail is not None and not is_open:
                await self.raise_(kind, site, gate, device_id, detail)
            elif detail is None and (is_open or not trust_belief):
                await self.clear(device_id, kind, site)

    async def count_invalid(self, site: str, gate: str, taps: int) -> None:
        """Add invalid-credential taps at a gate; raise when its window holds the threshold."""
        s = self.for_site(site)
        now = self.clock().timestamp()
        bucket, since = self._buckets(now, s.invalid_window_s)
        total = await self.db.write(store.add_invalid_taps, site, gate, bucket, taps, since)
        subject = store.gate_subject(site, gate)
        if total >= s.invalid_threshold and not self.is_open(subject, "invalid_credentials"):
            detail = {
                "taps": total,
                "window_s": s.invalid_window_s,
                "threshold": s.invalid_threshold,
            }
            await self.raise_("invalid_credentials", site, gate, None, detail)

    @staticmethod
    def _buckets(now: float, window_s: float) -> tuple[int, int]:
        """(the bucket of ``now``, the first bucket of the window ending now)."""
        return int(now // BUCKET_S), int((now - window_s) // BUCKET_S) + 1

    async def refresh(self) -> list[Alert]:
        """Re-read what is open from the database (the truth across processes)."""
        self._during_refresh = {}
        try:
            alerts = await self.db.run(store.open_alerts)
        finally:
            changed, self._during_refresh = self._during_refresh, None
        fresh: dict[tuple[str, str], str] = {(a.subject, a.kind): a.id for a in alerts}
        for key, alert_id in changed.items():  # newer than what the read saw
            if alert_id is None:
                fresh.pop(key, None)
            else:
                fresh[key] = alert_id
        self.open = fresh
        return alerts

    def _believe(self, key: tuple[str, str], alert_id: str | None) -> None:
        """Record this process's own change (None: cleared), also for a refresh running."""
        if alert_id is None:
            self.open.pop(key, None)
        else:
            self.open[key] = alert_id
        if self._during_refresh is not None:
            self._during_refresh[key] = alert_id

    async def check_time_rules(self, alerts: list[Alert]) -> None:
        """The rules time alone settles: a gate's invalid taps fell off the window, an
        audit alert stayed quiet long enough."""
        now = self.clock()
        for alert in alerts:
            s = self.for_site(alert.site)
            if alert.kind == "invalid_credentials":
                _, since = self._buckets(now.timestamp(), s.invalid_window_s)
                taps = await self.db.run(store.invalid_taps, alert.site, alert.gate, since)
                if taps < math.ceil(s.invalid_threshold / 2):
                    await self.clear(alert.subject, alert.kind, alert.site)
            elif alert.kind == "audit_chain":
                quiet = now - datetime.fromisoformat(alert.updated_at)
                if quiet.total_seconds() >= s.audit_quiet_s:
                    await self.clear(alert.subject, alert.kind, alert.site)

    async def reconcile_offline(self) -> None:
        """``kiosk_offline`` alerts in line with the presence table (``kiosk_down``), so
        they follow every way a kiosk is announced down or heard from again, whichever
        process saw it, even where no hook was called."""
        for device_id, site, gate, since in await self.db.run(store.offline_unraised):
            await self.raise_("kiosk_offline", site, gate, device_id, {"since": since})
        for alert in await self.db.run(store.offline_back):
            await self.clear(alert.subject, alert.kind, alert.site)

    async def clear_orphans(self) -> None:
        """Clear the alerts of kiosks revoked or removed."""
        for alert in await self.db.run(store.orphaned):
            await self.clear(alert.subject, alert.kind, alert.site)

    async def purge(self) -> None:
        """Forget invalid-tap buckets older than any site's window."""
        longest = max(
            [self.settings.invalid_window_s]
            + [s.invalid_window_s for s in self.settings.sites.values() if s.invalid_window_s]
        )
        _, since = self._buckets(self.clock().timestamp(), longest)
        await self.db.write(store.purge_invalid_taps, since)

    def _announce(self, kind: str, alert: Alert) -> None:
        log.info(
            "%s: %s at %s/%s%s (%s)",
            kind, alert.kind, alert.site, alert.gate,
            f" device {alert.device_id}" if alert.device_id else "", alert.id,
        )  # fmt: skip
        if self.for_site(alert.site).webhook:
            self.wake.set()
        emit(self.app, kind, alert.event())
