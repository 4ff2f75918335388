"""Celery's results in PostgreSQL (``CELERY_RESULT_BACKEND=db+postgresql://...``, a cluster of
the module's own) and no result backend at all (``CELERY_RESULT_BACKEND=disabled``, Celery's
``DisabledBackend``), each with a worker and a server of the bundled app of its own.

Their broker is the session's Redis, in a database of their own (the session's worker,
on database 0, must not take their tasks); jobcast's events stay where they always are.
With PostgreSQL, ``report()`` shows ``PROGRESS`` through ``AsyncResult`` and the full result
of a truncated ``job_completed`` is there; with no backend, REST shows the result from
jobcast's own events and ``report()`` carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from tests.support.env import child_env
from tests.support.helpers import job_events, start_job, wait_job_status
from tests.support.postgres import PostgresCluster, running_postgres
from tests.support.processes import ExternalRedis, RedisServer, running_server, running_worker
from workers.tasks import content_text

# The broker: a database of the session's Redis (not a Redis Cluster phase's).
pytestmark = [pytest.mark.integration, pytest.mark.single_redis]

USER = "results-user"
#: jobcast's limit on a result in ``job_completed``: a short topic's result (its text of at
#: most 4 sections included, about 1.2 KB) fits; a long topic's of :data:`LONG_SECTIONS`
#: sections (about 4.5 KB) does not.
MAX_BYTES = 2048
LONG_TOPIC = "a topic long enough to push the result over the limit " * 3
LONG_SECTIONS = 10


@dataclass
class Stack:
    server_url: str
    broker: str
    worker_log: Path


def broker_db(redis_server: RedisServer | ExternalRedis, db: int) -> str:
    """The session's Redis, database ``db``."""
    return urlsplit(redis_server.url)._replace(path=f"/{db}").geturl()


@contextlib.contextmanager
def stack(
    log_dir: Path, redis_server: RedisServer | ExternalRedis, db: int, backend: str
) -> Iterator[Stack]:
    """A worker and a server of the bundled app with ``backend`` as Celery's results."""
    broker = broker_db(redis_server, db)
    env = child_env(
        CELERY_BROKER_URL=broker,
        CELERY_RESULT_BACKEND=backend,
        JOBCAST_RESULT_MAX_BYTES=str(MAX_BYTES),
    )
    worker_log = log_dir / "worker.log"
    with (
        running_worker(worker_log, env),
        running_server(log_dir / "server.log", env) as server,
    ):
        yield Stack(server.url, broker, worker_log)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    with running_postgres() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def postgres_stack(
    postgres: PostgresCluster,
    redis_server: RedisServer | ExternalRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("pg-stack"), redis_server, 5, postgres.url) as handle:
        yield handle


@pytest.fixture(scope="module")
def results_app(postgres: PostgresCluster) -> Iterator[Celery]:
    """A Celery app of the test's own reading the PostgreSQL results (as a user's would)."""
    app = Celery("jobcast-results-test", backend=postgres.url, set_as_current=False)
    app.conf.update(result_serializer="json", accept_content=["json"])
    try:
        yield app
    finally:
        app.close()
        app.backend.ResultSession().get_bind().dispose()


@pytest.fixture(scope="module")
def disabled_stack(
    redis_server: RedisServer | ExternalRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # Celery's own name for no result backend (celery.backends.base.DisabledBackend).
    with stack(tmp_path_factory.mktemp("no-results"), redis_server, 6, "disabled") as handle:
        yield handle


def full_result(job_id: str, topic: str, sections: int) -> dict[str, Any]:
    """What ``generate_content`` returns."""
    return {
        "success": True,
        "contentId": f"content-{job_id}",
        "title": f"Generated Content: {topic}",
        "sections": sections,
        "content": content_text(topic, sections),
    }


async def wait_progress_state(app: Celery, task_id: str, within: float = 30.0) -> Any:
    """Poll ``AsyncResult(task_id).state`` (bounded) until it is ``PROGRESS``; its meta."""
    result = AsyncResult(task_id, app=app)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    state = None
    while loop.time() < deadline:
        state = await asyncio.to_thread(lambda: result.state)
        if state == "PROGRESS":
            return await asyncio.to_thread(lambda: result.info)
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} never showed PROGRESS in {within:g} s (last: {state})")


async def completed_job(
    stack: Stack, tokens: Any, topic: str, sections: int, seconds: float
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """A job started through the stack's REST API, to its end: its id, ``GET
    /api/v1/jobs/{id}``'s answer and its events."""
    token = tokens.make(USER)
    async with httpx.AsyncClient(base_url=stack.server_url, timeout=15) as http:
        job_id = await start_job(
            http, token, topic=topic, sections=sections, secondsPerSection=seconds
        )
        job = await wait_job_status(http, token, job_id, ("completed",), within=60)
        return job_id, job, await job_events(http, token, job_id)


async def truncated_job(stack: Stack, tokens: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job whose result is over :data:`MAX_BYTES`, to its end: REST's result (the
    truncation marker, checked against the full result) and the full result."""
    job_id, job, _ = await completed_job(stack, tokens, LONG_TOPIC, LONG_SECTIONS, 0)
    expected = full_result(job_id, LONG_TOPIC, LONG_SECTIONS)
    encoded = orjson.dumps(expected)
    marker: dict[str, Any] = job["result"]
    assert marker["truncated"] is True, marker
    assert marker["limit"] == MAX_BYTES, marker
    assert marker["bytes"] == len(encoded), marker
    assert encoded.decode().startswith(marker["preview"]), marker
    return marker, expected


async def test_postgres_results_show_progress_and_the_result(
    postgres_stack: Stack, results_app: Celery, tokens: Any
) -> None:
    token = tokens.make(USER)
    async with httpx.AsyncClient(base_url=postgres_stack.server_url, timeout=15) as http:
        job_id = await start_job(http, token, topic="postgres", sections=4, secondsPerSection=0.75)
        meta = await wait_progress_state(results_app, job_id)
        assert isinstance(meta, dict), meta
        assert 0 <= meta["progress"] <= 100, meta
        assert meta["message"], meta
        job = await wait_job_status(http, token, job_id, ("completed",), within=60)
    expected = full_result(job_id, "postgres", 4)
    assert job["result"] == expected, job
    stored = AsyncResult(job_id, app=results_app)
    assert await asyncio.to_thread(stored.get, timeout=30) == expected
    assert stored.state == "SUCCESS"


async def test_postgres_results_hold_a_truncated_result_in_full(
    postgres_stack: Stack, results_app: Celery, tokens: Any
) -> None:
    marker, expected = await truncated_job(postgres_stack, tokens)
    assert marker["taskId"] == expected["contentId"].removeprefix("content-"), marker
    stored = AsyncResult(marker["taskId"], app=results_app)
    assert await asyncio.to_thread(stored.get, timeout=30) == expected


async def test_no_result_backend_results_come_from_jobcasts_events(
    disabled_stack: Stack, results_client: Any, tokens: Any
) -> None:
    job_id, job, events = await completed_job(disabled_stack, tokens, "no results", 3, 0.3)
    assert job["result"] == full_result(job_id, "no results", 3), job
    # report() went on reporting: progress up to 100, then the end.
    progress = [
        e["data"]["progress"]
        for e in events
        if e["type"] == "job_status_update" and "progress" in e["data"]
    ]
    assert progress and progress[-1] == 100, events
    assert events[-1]["type"] == "job_completed", events
    log = disabled_stack.worker_log.read_text(errors="replace")
    assert "report() failed" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    # Nothing stored as a Celery result: not in the broker's database, not in jobcast's.
    broker = redis.Redis.from_url(disabled_stack.broker, socket_timeout=5)
    try:
        assert not await asyncio.to_thread(broker.exists, f"celery-task-meta-{job_id}")
    finally:
        broker.close()
    assert not await asyncio.to_thread(results_client.exists, f"celery-task-meta-{job_id}")


async def test_no_result_backend_truncates_from_jobcasts_events(
    disabled_stack: Stack, tokens: Any
) -> None:
    marker, _ = await truncated_job(disabled_stack, tokens)
    assert "taskId" not in marker, marker  # no backend holds the full result to fetch
