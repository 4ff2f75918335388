"""A running job's lease as the producer's publish renews it, on the session's Redis."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.keyspace import user_partition

pytestmark = pytest.mark.integration


def test_progress_steps_renew_the_lease_once_half_of_it_has_passed(redis_client: Any) -> None:
    """A change of state always renews a running job's lease; a progress step renews it
    only once half of it has passed (the worker's publisher renews it meanwhile)."""
    from notifier.contract.events import now_ms, status_update
    from notifier.contract.settings import Settings
    from notifier.core.bus import publish_sync

    settings = Settings(_env_file=None, job_lease_seconds=10.0)
    job, user = f"lease-{uuid.uuid4().hex[:8]}", "u-lease-steps"
    part = user_partition(user)

    def step(status: str, **fields: Any) -> float:
        assert publish_sync(redis_client, status_update(job, user, status, **fields), settings)
        score = redis_client.zscore(part.running, job)
        assert score is not None
        return float(score)

    began = now_ms()
    started = step("started")
    assert began + 10_000 <= started <= now_ms() + 10_000
    assert step("processing", progress=10) >= started  # a change of state: renewed
    redis_client.zadd(part.running, {job: now_ms() + 6_000})
    redis_client.hset(part.job(job), "lease", now_ms() + 6_000)
    assert step("processing", progress=20) < now_ms() + 6_001  # more than half left: kept
    redis_client.zadd(part.running, {job: now_ms() + 4_000})
    redis_client.hset(part.job(job), "lease", now_ms() + 4_000)
    before = now_ms()
    assert step("processing", progress=30) >= before + 10_000  # less than half: renewed
    redis_client.delete(part.job(job), part.job_events(job), part.user_jobs(user))
    redis_client.zrem(part.running, job)
