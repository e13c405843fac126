"""systemd's notify protocol without a dependency: ready, stopping, status, watchdog pings.

The units (deploy/systemd/) run the agent and the server as ``Type=notify`` with
``WatchdogSec``: systemd counts the service as started only once it says ``READY=1`` (so a
kiosk that cannot open its journal or bind its port is a failed start, not a running
service), and kills and restarts it when ``WATCHDOG=1`` stops arriving. The pings come from
:func:`watchdog_loop`, a task on the service's own event loop: a loop stuck in a blocking
call or a busy coroutine stops pinging, which is exactly the hang to be restarted. A thread
pinging on its own would keep a hung loop alive.

The protocol (``sd_notify(3)``) is one datagram of ``KEY=value`` lines to the Unix socket
named in ``$NOTIFY_SOCKET``; a name starting with ``@`` is in the abstract namespace. Every
function here is a no-op returning False outside systemd (no ``$NOTIFY_SOCKET``), and never
raises or blocks: a notification that cannot be sent is logged at debug level and dropped.

Only the service's main process notifies (``$SYSTEMD_EXEC_PID``, set by systemd 248+): the
units say ``NotifyAccess=main``, so a forked child that inherited the environment (a
``kiosk server run --workers N`` worker) stays quiet instead of filling the journal with
rejected messages; the supervisor speaks for its workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)

__all__ = [
    "notify",
    "notify_ready",
    "notify_status",
    "notify_stopping",
    "notify_watchdog",
    "watchdog_interval",
    "watchdog_loop",
]


def _address() -> str | None:
    """The notify socket's address as ``socket.sendto`` takes it; None outside systemd or
    in a process that is not the service's main one."""
    name = os.environ.get("NOTIFY_SOCKET", "")
    if not name or name[0] not in "/@" or not _is_main_process():
        return None
    return "\0" + name[1:] if name[0] == "@" else name


def _is_main_process() -> bool:
    main = os.environ.get("SYSTEMD_EXEC_PID", "")
    return not main or main == str(os.getpid())


def notify(*assignments: str) -> bool:
    """Send ``KEY=value`` assignments in one datagram; True when it was handed to systemd."""
    address = _address()
    if address is None:
        return False
    message = "\n".join(assignments).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never wait on systemd: a full receive queue drops this one notification.
            sock.setblocking(False)
            sock.sendto(message, address)
    except OSError as exc:
        log.debug("systemd notify %r not sent: %s", assignments, exc)
        return False
    return True


def notify_ready(status: str = "") -> bool:
    """Tell systemd the service is up (``Type=notify`` start completes); optional status."""
    return notify("READY=1", *_status(status))


def notify_stopping(status: str = "") -> bool:
    """Tell systemd the service is shutting down on purpose (no watchdog kill meanwhile)."""
    return notify("STOPPING=1", *_status(status))


def notify_status(text: str) -> bool:
    """The one-line status ``systemctl status`` shows."""
    return notify(*_status(text))


def notify_watchdog() -> bool:
    """One watchdog ping."""
    return notify("WATCHDOG=1")


def _status(text: str) -> list[str]:
    # One assignment per line: a newline in the text would start a bogus assignment.
    line = " ".join(text.split())
    return [f"STATUS={line}"] if line else []


def watchdog_interval() -> float | None:
    """Seconds between pings (half ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises),
    or None when systemd watches no watchdog for this process.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for: a child that
    inherited the environment is not it.
    """
    if _address() is None:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


async def watchdog_loop(interval_s: float | None = None) -> None:
    """Ping the watchdog from this event loop until cancelled; returns at once when there is
    no watchdog. ``interval_s`` overrides the interval taken from the environment (tests)."""
    interval = interval_s if interval_s is not None else watchdog_interval()
    if interval is None:
        return
    while True:
        notify_watchdog()
        await asyncio.sleep(interval)
