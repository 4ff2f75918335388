"""A producer for failover tests: a user's jobs, each queued, stepped and completed, with
the terminal events published again until a replica has them (what a worker's publisher
does), progress best effort while the master is away."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from notifier.contract.events import TERMINAL_TYPES, job_completed, status_update
from notifier.contract.settings import Settings
from notifier.core.bus import NotConfirmed, publish_sync


def publish_until_confirmed(client: Any, event: Any, settings: Settings) -> str | None:
    """Publish ``event`` again until a replica has it (bounded: a failover takes seconds)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return publish_sync(client, event, settings)
        except (redis.RedisError, OSError, NotConfirmed):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def produce_jobs(
    client: Any,
    settings: Settings,
    user: str,
    halfway: threading.Event,
    *,
    resume: threading.Event,
    jobs: int = 12,
    steps: int = 15,
) -> None:
    """Jobs ``fjob-0`` ... of ``user``. A third of the way through it sets ``halfway`` and
    waits (at most 30 s) for ``resume``: the test kills a master meanwhile, so the rest is
    published across the failover whatever the speed of publishing."""
    for job in range(jobs):
        job_id = f"fjob-{job}"
        publish_until_confirmed(client, status_update(job_id, user, "queued"), settings)
        for step in range(1, steps + 1):
            event = status_update(job_id, user, "processing", progress=step, seq=step)
            try:
                publish_sync(client, event, settings)
            except (redis.RedisError, OSError):
                time.sleep(0.05)
            if job == jobs // 3 and step == steps // 2:
                halfway.set()
                resume.wait(30)
        publish_until_confirmed(client, job_completed(job_id, user, {"n": job}), settings)


async def every_job_ends_once(
    client: Any, producer: threading.Thread, jobs: int, *, within: float = 90.0
) -> None:
    """Once the producer is done: each of its jobs' end reached ``client``, exactly once."""
    producer.join(within)
    assert not producer.is_alive(), f"the producer did not finish within {within:g} s"
    for job in range(jobs):
        await client.wait_for_type("job_completed", jobId=f"fjob-{job}", within=30)
    await client.settle()
    ends = [m["jobId"] for m in client.messages if m.get("type") in TERMINAL_TYPES]
    assert sorted(ends) == sorted(f"fjob-{job}" for job in range(jobs)), ends
