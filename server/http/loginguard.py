"""Admin login throttling per account and per source address, with exponential backoff.

A single login bucket for everyone let four password-guessing clients lock the real
administrator out (every login ``429``). Failures are now counted per key, where a key is
(account, source), the account over all sources, and the source over all accounts. After a
key's free failures each further one blocks it for 60 s, doubling up to an hour: a flood from
one address gets a few guesses per hour per account and is refused before any password work,
while every other address and account is untouched. The account's wide count holds back only
sources that already failed on it, and never one that logged in to it before (in this
process): guessing from many addresses cannot lock the administrator out, and costs the
guesser one attempt per fresh address (a second factor, ``POST /v1/admin/totp``, is the
answer to that). The process-wide
``[limits] login_per_s`` bucket still bounds the argon2 work, taken only by attempts that pass
the per-key checks. State is per process and in memory (bounded); sources are the TCP peer
(``X-Forwarded-For`` is not trusted).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from server.config import LimitSettings
from server.http.buckets import TokenBucket

BACKOFF_FIRST_S = 60.0
BACKOFF_MAX_S = 3600.0
#: A key without a failure for this long starts afresh.
FORGET_S = 24 * 3600.0
#: Keys remembered at most (least recently failed forgotten first).
MAX_KEYS = 100_000


@dataclass
class _Strikes:
    failures: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """Decides whether a login attempt may be checked, and learns from its result."""

    def __init__(self, limits: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._free = {"pair": limits.login_free_failures}
        self._free["account"] = self._free["source"] = limits.login_wide_free_failures
        self._bucket = TokenBucket(limits.login_per_s, max(1.0, limits.login_per_s * 2))
        self._clock = clock
        self._strikes: OrderedDict[tuple[str, str], _Strikes] = OrderedDict()
        self._trusted: OrderedDict[tuple[str, str], None] = OrderedDict()

    def _keys(self, account: str, source: str, failing: bool) -> list[tuple[str, str]]:
        pair = ("pair", f"{account}\x00{source}")
        keys = [pair, ("source", source)]
        if (account, source) not in self._trusted and (failing or pair in self._strikes):
            keys.append(("account", account))
        return keys

    def wait(self, account: str, source: str) -> float:
        """Seconds until this attempt may be checked; 0.0: check it now."""
        now = self._clock()
        blocked = max(self._blocked(key, now) for key in self._keys(account, source, False))
        return blocked if blocked > 0 else self._bucket.take()

    def _blocked(self, key: tuple[str, str], now: float) -> float:
        strikes = self._strikes.get(key)
        if strikes is None:
            return 0.0
        if now - strikes.last > FORGET_S:
            del self._strikes[key]
            return 0.0
        return max(0.0, strikes.blocked_until - now)

    def failed(self, account: str, source: str) -> None:
        """A wrong password or one-time code: one strike on every key of the attempt."""
        now = self._clock()
        for key in self._keys(account, source, True):
            strikes = self._strikes.pop(key, None) or _Strikes()
            strikes.failures += 1
            strikes.last = now
            beyond = strikes.failures - self._free[key[0]]
            if beyond >= 0:
                strikes.blocked_until = now + min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0**beyond)
            self._strikes[key] = strikes
        while len(self._strikes) > MAX_KEYS:
            self._strikes.popitem(last=False)

    def succeeded(self, account: str, source: str) -> None:
        """A good login: this source's strikes on the account end, and it is trusted there."""
        self._strikes.pop(("pair", f"{account}\x00{source}"), None)
        self._trusted[(account, source)] = None
        self._trusted.move_to_end((account, source))
        while len(self._trusted) > MAX_KEYS:
            self._trusted.popitem(last=False)
