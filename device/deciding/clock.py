"""Whether the kiosk may trust its own wall clock.

A Raspberry Pi has no battery-backed clock: after a power cut without network it may wake up
in 1970 or hours off. NAT windows and cache ages are computed from the wall clock, so a
decision that depends on time is only made when the clock is trusted: the kernel says NTP
has synchronised it, or the server's time (every answer carries `server_time`) agreed with
it recently. A step of the wall clock (seen against the monotonic clock) or a server time that
disagrees withdraws that trust until a server time agrees again: the kernel's NTP flag alone
does not bring it back, since the server's time is the one decisions answer to.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (Linux): we only read `status` and the return value;
    # the trailing padding keeps the kernel's writes inside our buffer.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


def kernel_ntp_synced() -> bool:
    """True when the kernel reports a synchronised clock (adjtimex, read-only query)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return False
    return bool(state not in (-1, _TIME_ERROR) and not tx.status & _STA_UNSYNC)


class ClockTrust:
    """Trusted if NTP-synced, or if the server's clock agreed within `tolerance_s` recently;
    never after the wall clock stepped or the server disagreed, until a server time agrees.

    A step is seen as a change of `wall - monotonic`: NTP slews both clocks alike, so that
    difference only moves when someone (a user, a bad RTC, NTP's own first step) sets the wall
    clock. Decisions made after a step would otherwise use a time nobody vouched for, and the
    agreement with the server was about the clock as it was before.
    """

    def __init__(
        self,
        *,
        tolerance_s: float = 120.0,
        valid_for_s: float = 24 * 3600.0,
        step_tolerance_s: float = 2.0,
        ntp_synced: Callable[[], bool] = kernel_ntp_synced,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tolerance_s = tolerance_s
        self.valid_for_s = valid_for_s
        self.step_tolerance_s = step_tolerance_s
        self._ntp_synced = ntp_synced
        self._wall = wall
        self._monotonic = monotonic
        self._agreed_at: float | None = None  # monotonic time of the last agreeing check
        self._offset = wall() - monotonic()  # wall - monotonic at the last sample
        self.last_skew_s: float | None = None
        self.last_step_s: float | None = None
        self.steps = 0
        # Why trust is withheld whatever NTP says, until a server time agrees ("" if not):
        # "clock_stepped" or "server_disagrees".
        self.distrust = ""
        self._ntp_cache: tuple[float, bool] | None = None

    def sample(self) -> None:
        """Look for a step of the wall clock since the last sample (cheap: two clock reads);
        run often, so a step drops trust before the next event is stamped."""
        offset = self._wall() - self._monotonic()
        jump = offset - self._offset
        self._offset = offset
        if abs(jump) <= self.step_tolerance_s:
            return
        self.steps += 1
        self.last_step_s = jump
        if self.distrust != "clock_stepped":
            log.warning("wall clock stepped %+.0f s: not trusted until the server agrees", jump)
        self._withdraw("clock_stepped")

    def observe_server_time(self, server_time: str, rtt_s: float = 0.0) -> None:
        """Compare the local clock with a server timestamp (ISO 8601 with offset)."""
        server = server_datetime(server_time)
        if server is None:
            return
        self.sample()  # a step before this answer is judged by it, not after it
        skew = self._wall() - rtt_s / 2 - server.timestamp()
        self.last_skew_s = skew
        if abs(skew) > self.tolerance_s:
            if self.distrust != "server_disagrees":
                log.warning("kiosk clock is %.0f s off the server's: not trusted", skew)
            self._withdraw("server_disagrees")
            return
        if self.distrust:
            log.info("kiosk clock agrees with the server's again (%+.1f s): trusted", skew)
        self.distrust = ""
        self._agreed_at = self._monotonic()

    def _withdraw(self, why: str) -> None:
        self.distrust = why
        self._agreed_at = None

    def trusted(self) -> bool:
        self.sample()
        if self.distrust:
            return False
        now = self._monotonic()
        if self._agreed_at is not None and now - self._agreed_at <= self.valid_for_s:
            return True
        if self._ntp_cache is None or now - self._ntp_cache[0] > 10.0:
            self._ntp_cache = (now, self._ntp_synced())
        return self._ntp_cache[1]


def server_datetime(server_time: object) -> dt.datetime | None:
    """A server timestamp as an aware datetime, or None when it is not one."""
    if not isinstance(server_time, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(server_time)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
