"""Per-connection rate limiting: a token bucket plus the flood rule of the contract.

A connection may send ``rate`` messages per second with bursts of ``burst``; past that its
messages are answered ``rate_limited``. One still flooding ``close_after`` seconds after its
first ``rate_limited`` is closed.
"""

from __future__ import annotations

import time
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

    def check(self, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            if self._flood_since is not None and self._tokens >= self._burst / 2:
                self._flood_since = None  # it slowed down: the flood is over
            return Verdict.OK
        if self._flood_since is None:
            self._flood_since = now
        elif now - self._flood_since >= self._close_after:
            return Verdict.CLOSE
        return Verdict.LIMITED
