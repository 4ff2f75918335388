"""jobcast's Redis managed by Sentinel (``JOBCAST_REDIS_SENTINELS``), Celery's broker and
results on the same sentinels (the bundled app's default): the master killed mid-stream,
the replica promoted; the notifier's readers and the publisher follow it without a
restart, every terminal event arrives exactly once, and the worker keeps taking jobs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier.contract.settings import Settings
from notifier.core.bus import sync_client
from tests.support.env import child_env
from tests.support.failover import every_job_ends_once, produce_jobs
from tests.support.helpers import connect_native, start_job, wait_job_status
from tests.support.processes import running_server, running_worker
from tests.support.redis_sentinel import MASTER_NAME, SentinelGroup

# A Redis of its own (not the session's): not in the Redis Cluster phase.
pytestmark = [pytest.mark.integration, pytest.mark.single_redis]

USER = "sentinel-user"
JOBS = 12
CELERY_USER = "sentinel-celery-user"


async def job_completes(http: httpx.AsyncClient, token: str, topic: str) -> None:
    """A job through the Celery broker on Sentinel, to its end."""
    job_id = await start_job(http, token, topic=topic, sections=2, secondsPerSection=0.1)
    job = await wait_job_status(http, token, job_id, ("completed",), within=60)
    assert job["result"]["success"] is True, job


async def test_a_sentinel_failover_mid_stream_loses_no_terminal_event(
    tmp_path: Path, tokens: Any
) -> None:
    group = SentinelGroup(tmp_path / "sentinel")
    try:
        group.start()  # inside: a failed start still stops what it started
        master = group.master_port()
        jobcast = {
            "JOBCAST_REDIS_SENTINELS": group.addresses,
            "JOBCAST_REDIS_SENTINEL_MASTER": MASTER_NAME,
            "REDIS_URL": "redis://127.0.0.1/0",  # the database only: the sentinels decide
        }
        env = child_env(**jobcast)
        env.pop("CELERY_BROKER_URL", None)  # Celery's broker and results: the sentinels too
        env.pop("CELERY_RESULT_BACKEND", None)
        settings = Settings(
            _env_file=None,
            redis_sentinels=group.addresses,
            redis_sentinel_master=MASTER_NAME,
            redis_url="redis://127.0.0.1/0",
        )
        with (
            running_worker(tmp_path / "worker.log", env),
            running_server(tmp_path / "server.log", env) as server,
        ):
            client = await connect_native(server.native_url, tokens.make(USER))
            await client.wait_for_type("connection_established")
            async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
                await job_completes(http, tokens.make(CELERY_USER), "before the failover")
            publisher = sync_client(settings)
            halfway, resume = threading.Event(), threading.Event()
            producer = threading.Thread(
                target=produce_jobs,
                args=(publisher, settings, USER, halfway),
                kwargs={"jobs": JOBS, "resume": resume},
                daemon=True,
            )
            producer.start()
            try:
                assert halfway.wait(30), "the producer did not get going"
                assert group.kill_master() == master
                resume.set()
                await every_job_ends_once(client, producer, JOBS)
                assert group.master_port() != master
                # The last end the client saw was confirmed by the replica: a reconnect
                # after it recovers exactly (nothing after it, nothing twice).
                last = client.of_type("job_completed")[-1]["eventId"]
                again = await connect_native(
                    server.native_url, tokens.make(USER), query={"lastEventId": last}
                )
                welcome = await again.wait_for_type("connection_established")
                assert welcome["recovered"] is True, again.describe()
                await again.settle()
                assert [m for m in again.messages if "eventId" in m] == [], again.describe()
                await again.close()
                async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
                    await job_completes(http, tokens.make(CELERY_USER), "after the failover")
            finally:
                resume.set()
                publisher.close()
                await client.close()
    finally:
        group.stop()
