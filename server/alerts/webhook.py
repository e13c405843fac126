"""POST each alert change to its site's webhook: claimed rows, retries with backoff.

The queue is in the database (:mod:`server.alerts.deliveries`); this is the loop that
drains it. It wakes when this process queues a change (:attr:`AlertService.wake`), when a
retry falls due, and every :data:`POLL_S` for rows other processes queued. A 2xx answer
is a delivery; anything else (an error status, a refused connection, a timeout) is retried
after ``webhook_retry_s``, doubling, up to ``webhook_attempts`` attempts.

The body: ``{"delivery": "<alert id>:<raised|cleared>", "event": "alert_raised" |
"alert_cleared", "alert": {…}}`` (the alert as ``GET /v1/guard/alerts`` shows it), and the
header ``X-Siheyi-Delivery`` repeats the delivery key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from server.alerts import deliveries, store
from server.alerts.deliveries import Delivery
from server.alerts.service import AlertService, iso

log = logging.getLogger(__name__)

#: Seconds between two looks at the queue when nothing woke the loop.
POLL_S = 5.0
#: A claimed row's lease outlasts its request's timeout by this much.
LEASE_MARGIN_S = 30.0


async def run(service: AlertService, session: aiohttp.ClientSession) -> None:
    """Deliver until cancelled; a failing database is retried at the next turn."""
    while True:
        service.wake.clear()
        delay = POLL_S
        try:
            await send_due(service, session)
            due = await service.db.run(deliveries.next_due)
            if due is not None:
                delay = min(POLL_S, max(0.0, due - service.clock().timestamp()))
        except Exception as exc:
            log.warning("alert webhook delivery failed: %s", exc)
        with contextlib.suppress(TimeoutError):  # not wait_for: see device/recording/uploader
            async with asyncio.timeout(delay):
                await service.wake.wait()


async def send_due(service: AlertService, session: aiohttp.ClientSession) -> int:
    """Claim the rows due now and POST them; how many were claimed."""
    lease = _longest_timeout(service) + LEASE_MARGIN_S
    claimed = await service.db.write(deliveries.claim, service.clock().timestamp(), lease)
    await asyncio.gather(*(_send(service, session, d) for d in claimed))
    return len(claimed)


def _longest_timeout(service: AlertService) -> float:
    s = service.settings
    return max([s.webhook_timeout_s] + [o.webhook_timeout_s or 0 for o in s.sites.values()])


async def _send(service: AlertService, session: aiohttp.ClientSession, d: Delivery) -> None:
    s = service.for_site(d.site)
    alert = await service.db.run(store.get_alert, d.alert_id)
    if alert is None or not s.webhook:
        await service.db.write(deliveries.mark_failed, d, "no alert or no webhook", None)
        return
    body = {"delivery": d.key, "event": f"alert_{d.change}", "alert": alert.to_json()}
    error = await _post(session, s.webhook, body, d.key, s.webhook_timeout_s)
    if error is None:
        await service.db.write(deliveries.mark_sent, d, iso(service.clock()))
        return
    retry_at = None
    if d.attempts < s.webhook_attempts:
        retry_at = service.clock().timestamp() + s.retry_after(d.attempts)
    log.warning(
        "alert webhook for site %s, delivery %s, attempt %d: %s%s",
        d.site, d.key, d.attempts, error, "" if retry_at else " (giving up)",
    )  # fmt: skip
    await service.db.write(deliveries.mark_failed, d, error, retry_at)


async def _post(
    session: aiohttp.ClientSession, url: str, body: object, key: str, timeout_s: float
) -> str | None:
    """None on a 2xx answer, else what went wrong."""
    try:
        async with session.post(
            url,
            json=body,
            headers={"X-Siheyi-Delivery": key},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as resp:
            await resp.read()
            if 200 <= resp.status < 300:
                return None
            return f"status {resp.status}"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except aiohttp.ClientError as exc:
        return f"{type(exc).__name__}: {exc}"
