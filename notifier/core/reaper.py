"""Reports jobs whose worker died without a word as ``job_error`` ``worker_lost``.

A running task's worker renews the job's lease in its partition's running set every
``job_lease_seconds / 3``. A worker killed as a whole fires no Celery signal, so its jobs
would show ``processing`` forever; instead their leases lapse and one notifier instance
(whichever holds the sweep lock) reports them within ``job_lease_seconds +
reaper_interval_seconds`` of the last renewal.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis

from notifier.contract import keys, scripts
from notifier.contract.events import job_error, now_ms
from notifier.contract.keys import Partition, keyspace
from notifier.contract.settings import Settings
from notifier.core.bus import AsyncRedis, publish, text

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, client: AsyncRedis, settings: Settings, instance_id: str) -> None:
        self._redis = client
        self._settings = settings
        self._space = keyspace(settings.partitions)
        self._instance = instance_id
        self._claim = client.register_script(scripts.source("reaper_claim"))

    async def sweep(self) -> int:
        """Reap the lapsed jobs of every partition once; returns how many were reported."""
        reaped = 0
        now = now_ms()
        partitions = self._space.partitions
        async with self._redis.pipeline(transaction=False) as pipe:
            for part in partitions:
                pipe.zrangebyscore(part.running, "-inf", now, start=0, num=100)
            replies = await pipe.execute()
        for part, lapsed in zip(partitions, replies, strict=True):
            for job in lapsed or ():
                reaped += await self._reap(part, text(job), now)
        return reaped

    async def _reap(self, part: Partition, job_id: str, now: int) -> int:
        if not await self._claim(keys=[part.running], args=[job_id, now]):
            return 0
        raw_owner = await self._redis.hget(part.job(job_id), "owner")
        if not raw_owner:
            return 0
        owner = text(raw_owner)
        lease = self._settings.job_lease_seconds
        event = job_error(
            job_id,
            owner,
            f"Worker lost: the task gave no sign of life for {lease:g} s",
            code="worker_lost",
            exception_type="WorkerLostError",
        )
        if not await publish(self._redis, event, self._settings):
            return 0
        log.warning(
            "job reaped as worker_lost",
            extra={"job": job_id, "user": owner, "partition": part.index},
        )
        return 1

    async def run(self) -> None:
        interval = self._settings.reaper_interval_seconds
        lease = self._settings.job_lease_seconds
        # After (re)connecting, give workers one lease period to renew before judging them:
        # while Redis was away nobody could renew.
        judge_after = time.monotonic() + lease
        while True:
            await asyncio.sleep(interval)
            try:
                locked = await self._redis.set(
                    keys.REAPER_LOCK, self._instance, nx=True, px=int(interval * 1000)
                )
                if locked and time.monotonic() >= judge_after:
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                judge_after = time.monotonic() + lease + interval
                log.warning("reaper could not reach Redis", extra={"error": str(exc)})
            except Exception:
                log.exception("reaper sweep failed")
