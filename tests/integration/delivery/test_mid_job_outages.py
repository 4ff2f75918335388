"""Redis restarted mid-job, and a Celery worker killed mid-task.

These tests run on a stack of their own (a Redis, a ``python -m api`` server, and a worker
per test), so restarting Redis or killing a worker cannot disturb the session's. The
server and workers run with short job leases (``JOBCAST_JOB_LEASE_SECONDS=3``,
``JOBCAST_REAPER_INTERVAL_SECONDS=1``), so that the documented worker_lost bound, lease +
reaper interval, stays short.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.env import child_env, free_port
from tests.support.fault_helpers import ServerProc
from tests.support.helpers import (
    TIMEOUT,
    bearer,
    connect_sio,
    is_job_status,
    is_terminal,
    start_job,
)
from tests.support.processes import RedisServer, running_worker

# Stops, restarts or proxies the one Redis: not in the Redis Cluster phase.
pytestmark = [pytest.mark.integration, pytest.mark.single_redis]

LEASE_SECONDS = 3.0
REAPER_INTERVAL_SECONDS = 1.0
#: Time for the reaper's event to travel the stream to the client, and for scheduling on a
#: loaded machine: not part of the documented bound, so kept separate and small.
DELIVERY_SLACK_SECONDS = 1.0


class Stack:
    def __init__(self, redis: RedisServer, server: ServerProc, env: dict[str, str]) -> None:
        self.redis = redis
        self.server = server
        self.env = env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("outage-stack")
    redis = RedisServer(free_port(), workdir)
    env = child_env(
        REDIS_URL=redis.url,
        JOBCAST_JOB_LEASE_SECONDS=str(LEASE_SECONDS),
        JOBCAST_REAPER_INTERVAL_SECONDS=str(REAPER_INTERVAL_SECONDS),
    )
    server = ServerProc(workdir, module="api", env=env)
    try:
        redis.start()
        server.start()
        yield Stack(redis, server, env)
    finally:
        server.stop()
        redis.stop()


async def wait_status(http: httpx.AsyncClient, path: str, status: int, **kwargs: Any) -> float:
    """Poll ``path`` (bounded) until it answers ``status``; returns when (monotonic)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    last = None
    while loop.time() < deadline:
        try:
            last = (await http.get(path, **kwargs)).status_code
        except httpx.HTTPError as exc:
            last = repr(exc)
        if last == status:
            return time.monotonic()
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never answered {status} (last: {last})")


async def test_redis_restart_mid_job(stack: Stack, tmp_path: Path, tokens: Any) -> None:
    """The job's worker reports through the outage (``report()`` never raises, the task
    completes); ``/readyz`` is 503 while Redis is down and 200 after; an admin broadcast
    answers 503 meanwhile; the job's ``job_completed`` reaches the connected owner, and the
    notifier's reader carries on (a broadcast after the restart arrives too)."""
    stack.redis.start()  # in case an earlier test left it stopped
    server = stack.server
    with running_worker(tmp_path / "worker.log", stack.env):
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
            client = await connect_sio(server.url, tokens.alice, ["websocket"])
            try:
                await client.wait_for_type("connection_established")
                # 12 sections of 0.4 s: report() runs all through a ~2 s outage.
                job_id = await start_job(
                    http, tokens.alice, topic="outage", sections=12, secondsPerSection=0.4
                )
                assert (await client.request("subscribe_job", jobId=job_id))["type"] == (
                    "subscribed"
                )
                await client.wait_for(
                    is_job_status(job_id, "processing"), what="the job's first progress"
                )
                started = client.mark()
                try:
                    stack.redis.stop()  # SIGTERM; it saves nothing: it comes back empty
                    await wait_status(http, "/readyz", 503)
                    broadcast = await http.post(
                        "/api/v1/websocket/broadcast/system",
                        json={"message": "during the outage", "level": "warning"},
                        headers=bearer(tokens.admin),
                    )
                    assert broadcast.status_code == 503, broadcast.text
                    assert broadcast.json()["code"] == "unavailable"
                    assert (await http.get("/healthz")).status_code == 200
                    await asyncio.sleep(1.5)
                finally:
                    stack.redis.start()  # the same port
                await wait_status(http, "/readyz", 200)

                done = await client.wait_for(
                    is_terminal(job_id), after=started, within=40, what="the job's end"
                )
                assert done["type"] == "job_completed", done
                assert done["result"]["success"] is True
                assert (await client.ping())["type"] == "pong", "the connection survived"

                # Nothing of the job after its end; what was shown is in order.
                job_messages = [m for m in client.for_job(job_id) if not m.get("snapshot")]
                assert job_messages[-1] is done
                progress = [m["data"].get("progress", 0) for m in job_messages[:-1]]
                assert progress == sorted(progress)

                after = client.mark()
                sent = await http.post(
                    "/api/v1/websocket/broadcast/system",
                    json={"message": "after the outage"},
                    headers=bearer(tokens.admin),
                )
                assert sent.status_code == 200, sent.text
                await client.wait_for_type(
                    "system_notification", after=after, message="after the outage"
                )
                job = await http.get(f"/api/v1/jobs/{job_id}", headers=bearer(tokens.alice))
                # (Once, in a CI run on the stock transport, this answered 500: the server's
                # log, which pytest's temporary directory does not keep, says why.)
                assert job.status_code == 200, f"{job.text}\n{server.log_text()[-4000:]}"
                assert job.json()["data"]["status"] == "completed", job.text

                # Everything above held. And the stack carries on: a job started after the
                # outage runs to its end (the worker survived the restart).
                next_job = await start_job(
                    http, tokens.alice, topic="after", sections=1, secondsPerSection=0
                )
                await client.request("subscribe_job", jobId=next_job)
                try:
                    outcome = await client.wait_for(
                        is_terminal(next_job), within=20, what="a job started after the outage"
                    )
                except AssertionError:
                    worker_log = (tmp_path / "worker.log").read_text(errors="replace")
                    fatal = [line for line in worker_log.splitlines() if "CRITICAL" in line]
                    raise AssertionError(
                        "the outage job's checks passed, but a job started after the restart "
                        f"never ran; the worker's log says: {fatal or '(no CRITICAL line)'}"
                    ) from None
                assert outcome["type"] == "job_completed", outcome
            finally:
                await client.close()


async def test_worker_killed_mid_task(stack: Stack, tmp_path: Path, tokens: Any) -> None:
    """kill -9 the whole worker (main process and pool children) while its task runs: the
    owner gets ``job_error`` ``worker_lost`` within lease + reaper interval, and the job
    shows nothing after it."""
    stack.redis.start()
    server = stack.server
    bound = LEASE_SECONDS + REAPER_INTERVAL_SECONDS
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
        client = await connect_sio(server.url, tokens.bob, ["websocket"])
        try:
            await client.wait_for_type("connection_established")
            with running_worker(tmp_path / "doomed-worker.log", stack.env) as worker:
                job_id = await start_job(
                    http, tokens.bob, topic="doomed", sections=30, secondsPerSection=0.5
                )
                assert (await client.request("subscribe_job", jobId=job_id))["type"] == (
                    "subscribed"
                )
                await client.wait_for(
                    lambda m: (
                        m.get("jobId") == job_id and m.get("data", {}).get("progress", 0) >= 5
                    ),
                    what="the job's progress",
                )
                os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pool children
                killed = time.monotonic()
                worker.wait(timeout=10)
                mark = client.mark()

                end = await client.wait_for(
                    is_terminal(job_id), after=0, within=bound + 15, what="worker_lost"
                )
                took = time.monotonic() - killed
            assert end["type"] == "job_error", end
            assert end["data"]["code"] == "worker_lost", end
            assert took <= bound + DELIVERY_SLACK_SECONDS, (
                f"worker_lost after {took:.1f} s; the bound is {bound:g} s"
            )
            await client.settle(1.0)
            later = [m for m in client.messages[mark:] if m.get("jobId") == job_id]
            assert later == [end], f"the job showed more after its end: {later}"
            job = await http.get(f"/api/v1/jobs/{job_id}", headers=bearer(tokens.bob))
            assert job.status_code == 200, job.text
            assert job.json()["data"]["status"] == "failed", job.json()
        finally:
            await client.close()
