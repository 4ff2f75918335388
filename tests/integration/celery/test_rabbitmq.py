"""jobcast's whole Celery life cycle on a RabbitMQ broker, with jobcast's events (and
Celery's results) still in Redis.

The same tests as on Redis, run here again against a stack of this module's own: a
``rabbitmq-server`` node (:class:`tests.support.rabbitmq.RabbitMQNode`), the bundled
worker and the test-local app's worker on it, and a server whose Celery app (revoke,
terminate) publishes to it. The module's ``celery_worker`` and ``server`` fixtures stand
in for the session's, so the reused tests' ``http`` and ``sio_client`` talk to this
stack. Covered: queued, started, progress, completed (a single task, and a chord),
retrying with ``retryInSeconds``, failed, cancelled (revoke before start, terminate while
running; by REST and by Celery), rejected, time_limit, worker_lost; Flower lists the
tasks and reads queue lengths from RabbitMQ's management API.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.celery import test_cancel, test_canvas, test_lifecycle
from tests.integration.delivery import test_e2e
from tests.support import celery_helpers
from tests.support.env import child_env, free_port
from tests.support.helpers import TIMEOUT, is_terminal, start_job
from tests.support.processes import Server, running_http_child, running_server, running_worker
from tests.support.rabbitmq import RabbitMQNode, celery_app_on, running_rabbitmq

pytestmark = [pytest.mark.integration, pytest.mark.single_redis]

# --- the life cycle, by the same tests as on Redis (collected here again, on this stack)

test_progress_to_completion = test_lifecycle.test_local_app_reports_progress_to_a_socketio_client
test_retry_twice_then_succeed = test_lifecycle.test_retry_twice_then_succeed
test_failing_job_ends_in_job_error = test_e2e.test_failing_job_ends_in_job_error
test_revoke_before_start = test_lifecycle.test_revoke_before_start
test_revoke_by_celery_before_start = test_lifecycle.test_revoke_by_celery_before_start
test_terminate_while_running = test_lifecycle.test_terminate_while_running
test_terminate_by_celery_while_running = test_lifecycle.test_terminate_by_celery_while_running
test_cancel_a_running_job = test_cancel.test_cancel_a_running_job
test_cancel_with_terminate_stops_the_task = test_cancel.test_cancel_with_terminate_stops_the_task
test_other_endings_are_job_errors = test_lifecycle.test_other_endings_are_job_errors  # 3 endings
test_chord_of_three_and_one = test_canvas.test_chord_of_three_and_one


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQNode]:
    with running_rabbitmq(tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


@pytest.fixture(scope="module")
def on_rabbitmq(rabbitmq: RabbitMQNode, redis_server: Any) -> Iterator[dict[str, str]]:
    """Celery's broker is the node, its results the session's Redis: for this process's
    test-local app (submit, revoke) and every child started meanwhile. Yields the
    children's environment."""
    from tests.support.celery_local_app import app

    with celery_app_on([app], rabbitmq.url, redis_server.url):
        yield child_env(CELERY_BROKER_URL=rabbitmq.url, CELERY_RESULT_BACKEND=redis_server.url)


@pytest.fixture(scope="module")
def celery_worker(
    on_rabbitmq: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """The bundled worker (REST jobs), on RabbitMQ."""
    with running_worker(tmp_path_factory.mktemp("amqp-worker") / "celery.log", on_rabbitmq) as p:
        yield p


@pytest.fixture(scope="module")
def server(
    on_rabbitmq: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The API (its revoke and terminate go through RabbitMQ) and the notifier."""
    with running_server(tmp_path_factory.mktemp("amqp-server") / "server.log", on_rabbitmq) as s:
        yield s


@pytest.fixture(scope="module", autouse=True)
def local_worker(
    on_rabbitmq: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """The test-local app's worker (the reused life-cycle tests' tasks), on RabbitMQ: it
    inherits ``CELERY_BROKER_URL`` from ``on_rabbitmq``."""
    yield from celery_helpers.local_worker(tmp_path_factory.mktemp("amqp-local"))


# --- Flower on the same broker, with RabbitMQ's management API for queue lengths


@pytest.fixture(scope="module")
def flower(
    rabbitmq: RabbitMQNode, on_rabbitmq: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    args = ["-m", "celery", "-A", "workers.app", "flower", f"--port={port}",
            "--address=127.0.0.1", f"--broker_api={rabbitmq.management_url}"]  # fmt: skip
    log_path = tmp_path_factory.mktemp("amqp-flower") / "flower.log"
    url = f"http://127.0.0.1:{port}"
    env = {**on_rabbitmq, "FLOWER_UNAUTHENTICATED_API": "true"}  # its /api without a login
    with running_http_child(args, log_path, f"{url}/healthcheck", env):
        yield url


async def test_flower_lists_the_tasks_and_queue_lengths(
    flower: str, sio_client: Any, tokens: Any, http: httpx.AsyncClient
) -> None:
    client = await sio_client(tokens.alice)
    jobs = [
        await start_job(http, tokens.alice, topic=f"flower {i}", sections=2, secondsPerSection=0.1)
        for i in range(2)
    ]
    for job in jobs:
        await client.request("subscribe_job", jobId=job)
        done = await client.wait_for(is_terminal(job), what=f"the end of {job}")
        assert done["type"] == "job_completed", done

    async with httpx.AsyncClient(base_url=flower, timeout=10) as api:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:  # Flower learns of the tasks from the worker's events
            tasks: dict[str, Any] = (await api.get("/api/tasks")).json()
            if all(tasks.get(job, {}).get("state") == "SUCCESS" for job in jobs):
                break
            assert loop.time() < deadline, f"Flower does not list {jobs} as SUCCESS: {tasks}"
            await asyncio.sleep(0.3)
        assert tasks[jobs[0]]["name"] == "jobcast.generate_content"

        # Queue lengths: Flower asks RabbitMQ's management API (--broker_api).
        lengths = (await api.get("/api/queues/length")).json()
        queues = {q["name"]: q for q in lengths["active_queues"]}
        assert "celery" in queues, lengths
        assert queues["celery"]["messages"] == 0, lengths
