"""Helpers of the Celery tests: the test-local app's worker, submitting, reading a job back.

The worker of ``tests.support.celery_local_app`` is started per test module (module-scoped
fixtures that call :func:`local_worker`), on the test Redis, and stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.helpers import bearer, is_terminal, job_events
from tests.support.keyspace import job_partition
from tests.support.processes import running_worker

#: How long a test keeps listening after a job's terminal event for anything more.
SETTLE_SECONDS = 1.5


def local_worker(log_dir: Path, *, concurrency: int = 4) -> Iterator[subprocess.Popen[bytes]]:
    """Run a worker of the test-local app until the generator is closed."""
    from tests.support.celery_local_app import QUEUE

    args = ["-m", "celery", "-A", "tests.support.celery_local_app", "worker",
            "-c", str(concurrency), "-P", "prefork", "-Q", QUEUE, "-l", "INFO",
            "--without-mingle", "--without-gossip", "-n", f"local-{log_dir.name}@%h"]  # fmt: skip
    with running_worker(log_dir / "local-worker.log", args=args) as proc:
        yield proc


async def submit(task: Any, *args: Any, user_id: str, **kwargs: Any) -> str:
    """``workers.submit`` from a thread (it publishes to the broker, blocking)."""
    import workers

    return await asyncio.to_thread(workers.submit, task, *args, user_id=user_id, **kwargs)


async def follow(client: Any, job_id: str) -> dict[str, Any]:
    """Subscribe to ``job_id``, wait (bounded) for its terminal message, give duplicates a
    bounded chance to show up, and return the terminal message."""
    answer = await client.request("subscribe_job", jobId=job_id)
    assert answer == {"type": "subscribed", "jobId": job_id}, answer
    terminal = await client.wait_for(is_terminal(job_id), what=f"the end of job {job_id}")
    await client.settle(SETTLE_SECONDS)
    return terminal


async def history(http: Any, token: str, job_id: str) -> list[dict[str, Any]]:
    """The job's whole history (REST), which no connection-level coalescing thins out."""
    return await job_events(http, token, job_id)


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["status"] if e["type"] == "job_status_update" else e["type"] for e in events]


def progress_values(messages: list[dict[str, Any]]) -> list[float]:
    return [
        m["data"]["progress"]
        for m in messages
        if m["type"] == "job_status_update" and "progress" in m["data"]
    ]


def assert_monotonic(values: list[float]) -> None:
    assert values == sorted(values), f"progress went down: {values}"


async def wait_celery_state(
    redis_client: Any, task_id: str, states: tuple[str, ...], within: float = 40.0
) -> dict[str, Any]:
    """Wait (bounded) until Celery's result backend holds one of ``states`` for the task;
    returns the stored meta."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    meta: dict[str, Any] = {}
    while loop.time() < deadline:
        raw = await asyncio.to_thread(redis_client.get, f"celery-task-meta-{task_id}")
        meta = json.loads(raw) if raw else {}
        if meta.get("status") in states:
            return meta
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} never reached {states} in {within:g} s: {meta}")


def member_task_ids(redis_client: Any, job_id: str) -> list[str]:
    raw = redis_client.hget(job_partition(redis_client, job_id).canvas(job_id), "tasks")
    assert raw, f"canvas job {job_id} recorded no members"
    return [str(task_id) for task_id in json.loads(raw)]


async def rest_jobs(http: Any, token: str) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/jobs", headers=bearer(token))
    assert response.status_code == 200, response.text
    jobs: list[dict[str, Any]] = response.json()["data"]["jobs"]
    return jobs
