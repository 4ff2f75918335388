"""Reports jobs whose worker died without a word as ``job_error`` ``worker_lost``.

A running task's worker renews the job's lease in ``keys.RUNNING`` every
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
import redis.asyncio as aioredis

from notifier.contract import keys, scripts
from notifier.contract.events import job_error, now_ms
from notifier.contract.settings import Settings
from notifier.core.bus import publish, text

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, client: aioredis.Redis, settings: Settings, instance_id: str) -> None:
        self._redis = client
        self._settings = settings
        self._instance = instance_id
        self._claim = client.register_script(scripts.source("reaper_claim"))

    async def sweep(self) -> int:
        """Reap the lapsed jobs once; returns how many were reported."""
        reaped = 0
        now = now_ms()
        lapsed = [
            text(job)
            for job in await self._redis.zrangebyscore(keys.RUNNING, "-inf", now, start=0, num=100)
        ]
        for job_id in lapsed:
            if not await self._claim(keys=[keys.RUNNING], args=[job_id, now]):
                continue
            raw_owner = await self._redis.hget(keys.job(job_id), "owner")
            if not raw_owner:
                continue
            owner = text(raw_owner)
            lease = self._settings.job_lease_seconds
            event = job_error(
                job_id,
                owner,
                f"Worker lost: the task gave no sign of life for {lease:g} s",
                code="worker_lost",
                exception_type="WorkerLostError",
            )
            if await publish(self._redis, event, self._settings):
                reaped += 1
                log.warning("job reaped as worker_lost", extra={"job": job_id, "user": owner})
        return reaped

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
