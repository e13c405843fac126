"""Serving through connection floods: file limit, header deadline, descriptor reserve, quiet logs.

About 1,100 idle connections at the default 1,024-file limit once shut out every kiosk, and
the accept loop then logged 200,000 "too many open files" lines. So ``kiosk server run``:

* raises the soft ``RLIMIT_NOFILE`` to the hard limit at start (:func:`raise_fd_limit`);
* drops a connection that has not sent its first request's headers within
  ``[limits] header_timeout_s`` (a TLS handshake counts against it); idle kept-alive
  connections close after ``keepalive_s`` (aiohttp's own timer);
* keeps ``[limits] fd_reserve`` descriptors out of the clients' reach (database, upstream
  connections, logs): at ``limit − fd_reserve`` open connections, a new one evicts the oldest
  connection still sending its headers (else the oldest at all), so a flood of idle sockets
  can never keep a kiosk out and ``accept()`` never runs out of descriptors;
* logs such floods once per interval, with counts, instead of once per connection — and
  the event loop's own "out of system resource" accept errors likewise;
* writes the access log (``[server] access_log``) off the loop (server/http/accesslog.py);
* under systemd (``Type=notify``, deploy/systemd/siheyi-server.service) says ``READY=1`` once
  it listens, pings the watchdog from its event loop (a hung loop gets the service
  restarted) and says ``STOPPING=1`` on the way out (core/systemd.py).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from core.systemd import notify_ready, notify_stopping, watchdog_loop
from server.appkeys import CONFIG
from server.http.accesslog import ACCESS_LOGGER, AccessLog, start_access_log

log = logging.getLogger(__name__)

#: Floods and accept errors are reported at most once per this many seconds.
REPORT_EVERY_S = 60.0
_END_OF_HEADERS = b"\r\n\r\n"


def raise_fd_limit() -> int:
    """Raise the soft file-descriptor limit to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the file limit from %d to %d: %s", soft, target, exc)
    return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20


class FloodReport:
    """Counts events by kind and logs them as one warning per interval."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._since = clock()
        self.lines = 0

    def count(self, kind: str, context: str = "") -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        now = self._clock()
        if now - self._since >= REPORT_EVERY_S or self.lines == 0:
            counts = ", ".join(f"{n} {k}" for k, n in sorted(self._counts.items()))
            log.warning(
                "connection flood: %s in the last %.0f s%s", counts, now - self._since, context
            )
            self.lines += 1
            self._counts.clear()
            self._since = now


class _Tracked(asyncio.Protocol):
    """Forwards everything to aiohttp's protocol; watches for the end of the first headers."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None
        self.headers_done = False
        self._tail = b""
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.guard.opened(self)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.guard.header_timeout_s, self._too_slow)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.headers_done:
            seen = self._tail + data
            if _END_OF_HEADERS in seen:
                self.headers_done = True
                self.guard.engaged(self)
                if self._deadline is not None:
                    self._deadline.cancel()
            else:
                self._tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self.guard.closed(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def _too_slow(self) -> None:
        if not self.headers_done:
            self.guard.report.count("header timeouts")
            self.drop()

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]


class ConnectionGuard:
    """The protocol factory handed to ``loop.create_server`` in front of aiohttp's."""

    def __init__(self, factory: Callable[[], Any], capacity: int, header_timeout_s: float) -> None:
        self._factory = factory
        self.capacity = capacity
        self.header_timeout_s = header_timeout_s
        self.report = FloodReport()
        self._pending: OrderedDict[_Tracked, None] = OrderedDict()
        self._engaged: OrderedDict[_Tracked, None] = OrderedDict()

    def __call__(self) -> asyncio.Protocol:
        return _Tracked(self, self._factory())

    @property
    def open(self) -> int:
        return len(self._pending) + len(self._engaged)

    def opened(self, conn: _Tracked) -> None:
        if self.open >= self.capacity:
            victims = self._pending or self._engaged
            victim = next(iter(victims))
            victims.pop(victim)
            victim.drop()
            self.report.count(
                "connections evicted at capacity", f" ({self.open} open, capacity {self.capacity})"
            )
        self._pending[conn] = None

    def engaged(self, conn: _Tracked) -> None:
        if conn in self._pending:
            del self._pending[conn]
            self._engaged[conn] = None

    def closed(self, conn: _Tracked) -> None:
        self._pending.pop(conn, None)
        self._engaged.pop(conn, None)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, report: FloodReport) -> None:
    """Route the loop's "socket.accept() out of system resource" errors (one per failed
    accept, each with a traceback) to ``report``; everything else as before."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "out of system resource" in str(context.get("message", "")):
            report.count("accept() errors (out of file descriptors)")
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


async def serve(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    reuse_port: bool = False,
) -> None:
    """Serve ``app`` behind a :class:`ConnectionGuard` until cancelled (or a signal).

    ``reuse_port``: bind with ``SO_REUSEPORT`` so several processes share the port and the
    kernel spreads new connections over them (``kiosk server run --workers N``).
    """
    limits = app[CONFIG].limits
    fd_limit = raise_fd_limit()
    capacity = max(16, fd_limit - limits.fd_reserve)
    access = logging.getLogger(ACCESS_LOGGER) if app[CONFIG].access_log else None
    runner = web.AppRunner(
        app,
        keepalive_timeout=limits.keepalive_s,
        handle_signals=True,
        access_log_class=AccessLog,
        access_log=access,
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    assert runner.server is not None
    guard = ConnectionGuard(runner.server, capacity, limits.header_timeout_s)
    quiet_accept_errors(loop, guard.report)
    server = await loop.create_server(
        guard, host, port, ssl=ssl_context, backlog=1024, reuse_port=reuse_port or None
    )
    log.info("file limit %d: at most %d client connections", fd_limit, capacity)
    listener = start_access_log() if access is not None else None
    watchdog = asyncio.create_task(watchdog_loop(), name="systemd-watchdog")
    notify_ready(f"listening on {host or '*'}:{port}")
    try:
        await asyncio.Future()
    finally:
        notify_stopping()
        watchdog.cancel()
        server.close()
        await runner.cleanup()
        if listener is not None:
            listener.stop()
