"""Token buckets: the per-connection flood rule and the per-user REST limits."""

from __future__ import annotations

import pytest

from notifier.edge.limits import RateLimiter, UserRateLimits, Verdict


def test_burst_then_limited_then_refilled() -> None:
    limiter = RateLimiter(rate=20, burst=40, close_after=5)
    verdicts = [limiter.check(now=100.0) for _ in range(41)]
    assert verdicts[:40] == [Verdict.OK] * 40
    assert verdicts[40] is Verdict.LIMITED
    assert limiter.retry_after() == pytest.approx(0.05)
    assert limiter.check(now=100.051) is Verdict.OK  # one token per 1/20 s


def test_sustained_flood_is_closed_and_a_pause_forgives_it() -> None:
    limiter = RateLimiter(rate=20, burst=40, close_after=5)
    now = 0.0
    while limiter.check(now) is Verdict.OK:
        pass
    verdicts = []
    for _ in range(600):  # 100 messages/s for 6 s
        now += 0.01
        verdicts.append(limiter.check(now))
    assert verdicts[-1] is Verdict.CLOSE
    assert Verdict.CLOSE not in verdicts[:450], "closed before 5 s of flooding"

    calm = RateLimiter(rate=20, burst=40, close_after=5)
    while calm.check(now) is Verdict.OK:
        pass
    now += 2.0  # a pause refills the bucket: the flood is over
    assert calm.check(now) is Verdict.OK
    for _ in range(40):
        calm.check(now)
    assert calm.check(now + 5.5) is not Verdict.CLOSE


def test_user_limits_are_per_user() -> None:
    limits = UserRateLimits(rate=20, burst=40)
    assert all(limits.check("alice", now=10.0) == 0.0 for _ in range(40))
    wait = limits.check("alice", now=10.0)
    assert wait == pytest.approx(0.05)
    assert limits.check("bob", now=10.0) == 0.0
    assert limits.check("alice", now=10.0 + wait + 1e-6) == 0.0


def test_user_limits_forget_the_least_recently_seen_past_the_bound() -> None:
    limits = UserRateLimits(rate=1, burst=1, max_keys=2)
    limits.check("a", now=0.0)
    limits.check("b", now=0.0)
    assert limits.check("a", now=0.0) > 0  # "a" is now the most recently seen
    limits.check("c", now=0.0)  # forgets "b"
    assert limits.check("b", now=0.0) == 0.0, "b's bucket should have been forgotten (full)"
    assert limits.check("c", now=0.0) > 0
