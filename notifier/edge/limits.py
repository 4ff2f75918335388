"""Rate limiting: a token bucket plus the flood rule of the contract.

A connection may send ``rate`` messages per second with bursts of ``burst``; past that its
messages are answered ``rate_limited``. One still flooding ``close_after`` seconds after its
first ``rate_limited`` is closed. REST callers get a bucket per user (``UserRateLimits``)
and 429 with ``Retry-After``. Failed authentications are counted per client address
(``AddressLimits``): past a burst, that address is refused until its bucket refills.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from enum import Enum


class Verdict(Enum):
    OK = "ok"
    LIMITED = "limited"
    CLOSE = "close"


class RateLimiter:
    __slots__ = ("_burst", "_close_after", "_flood_since", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, close_after: float) -> None:
        self._rate = rate
        self._burst = burst
        self._close_after = close_after
        self._tokens = burst
        self._last = time.monotonic()
        self._flood_since: float | None = None

    def refill(self, now: float | None = None) -> float:
        """The tokens in the bucket now (none is taken)."""
        now = time.monotonic() if now is None else now
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._last) * self._rate)
        self._last = now
        return self._tokens

    def check(self, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        if self.refill(now) >= 1:
            self._tokens -= 1
            if self._flood_since is not None and self._tokens >= self._burst / 2:
                self._flood_since = None  # it slowed down: the flood is over
            return Verdict.OK
        if self._flood_since is None:
            self._flood_since = now
        elif now - self._flood_since >= self._close_after:
            return Verdict.CLOSE
        return Verdict.LIMITED

    def retry_after(self) -> float:
        """Seconds until the bucket holds a token again."""
        return max(0.0, (1 - self._tokens) / self._rate)


class _Buckets:
    """One token bucket per key, in this process; the least recently seen key is forgotten
    past ``max_keys`` (its bucket would have refilled by then in practice)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000) -> None:
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, RateLimiter] = OrderedDict()

    def _bucket(self, key: str) -> RateLimiter:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = RateLimiter(self._rate, self._burst, math.inf)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket


class UserRateLimits(_Buckets):
    """REST requests: a bucket per user."""

    def check(self, key: str, now: float | None = None) -> float:
        """0.0 when ``key`` may go on, else the seconds it should wait."""
        bucket = self._bucket(key)
        if bucket.check(now) is Verdict.OK:
            return 0.0
        return bucket.retry_after()


class AddressLimits(_Buckets):
    """Failed authentications per client address (its real one: see
    ``JOBCAST_TRUSTED_PROXIES``). Each failure takes a token; an address whose bucket is
    empty is refused ``rate_limited``, whatever token it sends, until a token is back, so
    guessing tokens or flooding handshakes from one address costs that address alone."""

    def blocked(self, key: str, now: float | None = None) -> float:
        """0.0 when ``key`` may try to authenticate, else the seconds it should wait."""
        bucket = self._buckets.get(key)
        if bucket is None or bucket.refill(now) >= 1:
            return 0.0
        return bucket.retry_after()

    def failed(self, key: str, now: float | None = None) -> None:
        self._bucket(key).check(now)
