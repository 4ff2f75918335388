"""A Celery app of the tests' own, with ``workers.install(app)``, run by its own worker:
progress to a Socket.IO client, retries, cancellation before and during a run, the other
ways a task ends (rejected, time limit, worker lost), result payloads, the ETA, and the
admins' Flower links in REST."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from celery import group

from tests.support import celery_helpers
from tests.support.celery_helpers import (
    assert_monotonic,
    follow,
    history,
    progress_values,
    statuses,
    submit,
    wait_celery_state,
)
from tests.support.celery_local_app import (
    app,
    big,
    die,
    flaky,
    not_json,
    overtime,
    reject,
    sleepy,
    steady,
    unserialisable,
)
from tests.support.env import REPO, child_env, free_port
from tests.support.helpers import bearer, is_job_status, is_terminal
from tests.support.processes import START_TIMEOUT, log_tail, stop_process
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def local_worker(
    redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    yield from celery_helpers.local_worker(tmp_path_factory.mktemp("lifecycle"))


async def user(sio_client: Any, tokens: Any, name: str) -> tuple[str, str, Any]:
    """A user of this test alone: ``(user_id, token, connected Socket.IO client)``."""
    user_id = f"celery-{name}"
    token = tokens.make(user_id)
    return user_id, token, await sio_client(token)


def is_progress(msg: dict[str, Any]) -> bool:
    return msg["type"] == "job_status_update" and msg["data"]["status"] == "processing"


async def test_local_app_reports_progress_to_a_socketio_client(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient
) -> None:
    user_id, token, client = await user(sio_client, tokens, "progress")
    job = await submit(steady, user_id=user_id, steps=4, seconds=0.4)
    terminal = await follow(client, job)
    assert terminal["type"] == "job_completed", terminal
    assert terminal["result"] == {"steps": 4}
    assert len(client.of_type("job_completed", jobId=job)) == 1

    live = [m for m in client.for_job(job) if not m.get("snapshot") and is_progress(m)]
    assert live, f"no progress arrived live:\n  {client.describe()}"
    assert live[-1]["data"]["progress"] == 100
    assert_monotonic(progress_values(client.for_job(job)))

    events = await history(http, token, job)
    assert statuses(events) == ["queued", "started", *["processing"] * 5, "job_completed"], (
        statuses(events)
    )
    assert [e["data"]["progress"] for e in events if is_progress(e)] == [0, 25, 50, 75, 100]
    assert events[3]["data"]["step"] == 1  # report()'s extra fields go into data


async def test_eta_is_present_after_the_second_report_and_decreases(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient
) -> None:
    user_id, token, client = await user(sio_client, tokens, "eta")
    job = await submit(steady, user_id=user_id, steps=5, seconds=0.6)
    terminal = await follow(client, job)
    assert terminal["type"] == "job_completed", terminal

    reports = [e["data"] for e in await history(http, token, job) if is_progress(e)]
    assert [r["progress"] for r in reports] == [0, 20, 40, 60, 80, 100]
    assert "etaSeconds" not in reports[0], "one progress point gives no rate"
    etas = [r["etaSeconds"] for r in reports[1:-1]]
    assert all(eta >= 0 for eta in etas), etas
    assert all(a > b for a, b in itertools.pairwise(etas)), f"not decreasing: {etas}"
    assert reports[-1]["etaSeconds"] == 0
    live = [m for m in client.for_job(job) if is_progress(m) and "etaSeconds" in m["data"]]
    assert live, "the subscriber saw no etaSeconds"


async def test_retry_twice_then_succeed(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient
) -> None:
    user_id, token, client = await user(sio_client, tokens, "retry")
    job = await submit(flaky, user_id=user_id, failures=2, countdown=1)
    terminal = await follow(client, job)
    assert terminal["type"] == "job_completed", terminal
    assert terminal["result"] == {"runs": 3}
    assert len(client.of_type("job_completed", jobId=job)) == 1

    events = await history(http, token, job)
    kinds = statuses(events)
    retries = [e["data"] for e in events if kinds[events.index(e)] == "retrying"]
    assert [r["attempt"] for r in retries] == [1, 2], kinds
    assert all(r["retryInSeconds"] == pytest.approx(1.0, abs=0.5) for r in retries), retries
    assert kinds.count("started") == 3 and kinds[-1] == "job_completed", kinds
    assert kinds.index("retrying") < kinds.index("job_completed")


async def test_revoke_before_start(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient, redis_client: Any, results_client: Any
) -> None:
    """DELETE on a job still waiting for its countdown: the owner sees ``cancelled`` and
    the worker never runs it."""
    user_id, token, client = await user(sio_client, tokens, "revoke-api")
    job = await submit(steady, user_id=user_id, options={"countdown": 3})
    response = await http.delete(f"/api/v1/jobs/{job}", headers=bearer(token))
    assert response.status_code == 200, response.text
    await client.wait_for(is_job_status(job, "cancelled"), what="cancelled")
    await wait_celery_state(results_client, job, ("REVOKED",))
    await client.settle(celery_helpers.SETTLE_SECONDS)
    kinds = statuses(await history(http, token, job))
    assert kinds == ["queued", "cancelled"], kinds
    assert not client.of_type("job_completed", jobId=job)


async def test_revoke_by_celery_before_start(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient, redis_client: Any, results_client: Any
) -> None:
    """``app.control.revoke`` alone: the worker's task_revoked reports ``cancelled``."""
    user_id, token, client = await user(sio_client, tokens, "revoke-celery")
    job = await submit(steady, user_id=user_id, options={"countdown": 2})
    await asyncio.to_thread(app.control.revoke, job)
    cancelled = await client.wait_for(is_job_status(job, "cancelled"), what="cancelled")
    assert "revoked" in cancelled["data"]["message"]
    await wait_celery_state(results_client, job, ("REVOKED",))
    await client.settle(celery_helpers.SETTLE_SECONDS)
    assert statuses(await history(http, token, job)) == ["queued", "cancelled"]


async def test_expired_before_start(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient, redis_client: Any, results_client: Any
) -> None:
    """A task whose ``expires`` passes before it may start is reported ``cancelled``."""
    user_id, token, client = await user(sio_client, tokens, "expired")
    job = await submit(steady, user_id=user_id, options={"countdown": 2, "expires": 1})
    cancelled = await client.wait_for(is_job_status(job, "cancelled"), what="cancelled")
    assert "expired" in cancelled["data"]["message"]
    await wait_celery_state(results_client, job, ("REVOKED",))
    await client.settle(celery_helpers.SETTLE_SECONDS)
    assert statuses(await history(http, token, job)) == ["queued", "cancelled"]


async def test_terminate_while_running(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient, redis_client: Any, results_client: Any
) -> None:
    user_id, token, client = await user(sio_client, tokens, "terminate-api")
    job = await submit(sleepy, user_id=user_id, seconds=30)
    await client.request("subscribe_job", jobId=job)
    await client.wait_for(lambda m: m.get("jobId") == job and is_progress(m), what="running")
    response = await http.delete(
        f"/api/v1/jobs/{job}", params={"terminate": "true"}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    await client.wait_for(is_job_status(job, "cancelled"), what="cancelled")
    await wait_celery_state(results_client, job, ("REVOKED",))
    await client.settle(celery_helpers.SETTLE_SECONDS)
    kinds = statuses(await history(http, token, job))
    assert kinds[-1] == "cancelled" and "job_completed" not in kinds, kinds
    after = client.for_job(job)
    last = max(i for i, m in enumerate(after) if m["data"].get("status") == "cancelled")
    assert all(m["type"] == "job_status_update" for m in after[last:])
    assert len([m for m in after if is_terminal(job)(m)]) == 0


async def test_terminate_by_celery_while_running(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient, redis_client: Any, results_client: Any
) -> None:
    """``revoke(terminate=True)`` alone: the worker reports the terminated task."""
    user_id, token, client = await user(sio_client, tokens, "terminate-celery")
    job = await submit(sleepy, user_id=user_id, seconds=30)
    await client.request("subscribe_job", jobId=job)
    await client.wait_for(lambda m: m.get("jobId") == job and is_progress(m), what="running")
    await asyncio.to_thread(app.control.revoke, job, terminate=True, signal="SIGTERM")
    cancelled = await client.wait_for(is_job_status(job, "cancelled"), what="cancelled")
    assert "terminated" in cancelled["data"]["message"]
    await wait_celery_state(results_client, job, ("REVOKED",))
    await client.settle(celery_helpers.SETTLE_SECONDS)
    kinds = statuses(await history(http, token, job))
    assert kinds[-1] == "cancelled" and "job_completed" not in kinds, kinds


@pytest.mark.parametrize(
    ("task", "code", "exception_type"),
    [
        (reject, "rejected", "Reject"),
        (overtime, "time_limit", "TimeLimitExceeded"),
        (die, "worker_lost", "WorkerLostError"),
    ],
    ids=["rejected", "time_limit", "worker_lost"],
)
async def test_other_endings_are_job_errors(
    sio_client: Any, tokens: Any, task: Any, code: str, exception_type: str
) -> None:
    """Signals sent from the worker's main process, some without the task's headers."""
    user_id, _, client = await user(sio_client, tokens, f"ending-{code}")
    job = await submit(task, user_id=user_id)
    error = await client.wait_for(is_terminal(job), what=f"job_error {code}")
    assert error["type"] == "job_error", error
    assert error["data"] == {"code": code, "exceptionType": exception_type}, error
    await client.settle(celery_helpers.SETTLE_SECONDS)
    assert len([m for m in client.messages if is_terminal(job)(m)]) == 1


async def test_results_that_are_not_json_are_errors_and_the_worker_carries_on(
    sio_client: Any, tokens: Any, redis_client: Any, results_client: Any
) -> None:
    user_id, _, client = await user(sio_client, tokens, "not-json")
    # Celery stores it (its JSON knows datetimes); jobcast's wire does not.
    job = await submit(not_json, user_id=user_id)
    error = await client.wait_for(is_terminal(job), what="job_error")
    assert error["type"] == "job_error" and "not JSON" in error["error"], error
    assert error["data"]["code"] == "task_failed"
    assert (await wait_celery_state(results_client, job, ("SUCCESS",)))["status"] == "SUCCESS"
    # Not even Celery can store this one: it fails the task itself.
    job = await submit(unserialisable, user_id=user_id)
    error = await client.wait_for(is_terminal(job), what="job_error")
    assert error["type"] == "job_error", error
    # The worker is unharmed: the next job runs to completion.
    job = await submit(steady, user_id=user_id, steps=1, seconds=0.1)
    done = await client.wait_for(is_terminal(job), what="job_completed")
    assert done["type"] == "job_completed", done


async def test_oversized_results_are_truncated_with_a_marker(
    sio_client: Any, tokens: Any, redis_client: Any, results_client: Any
) -> None:
    user_id, _, client = await user(sio_client, tokens, "big")
    size = 40_000
    job = await submit(big, size, user_id=user_id)
    done = await client.wait_for(is_terminal(job), what="job_completed")
    assert done["type"] == "job_completed", done
    marker = done["result"]
    assert marker["truncated"] is True and marker["taskId"] == job
    assert marker["bytes"] == len('{"blob":""}') + size
    assert marker["limit"] == 32 * 1024
    assert marker["preview"].startswith('{"blob":"xxx') and len(marker["preview"]) <= 1024
    # The whole result stays in Celery's result backend.
    meta = await wait_celery_state(results_client, job, ("SUCCESS",))
    assert meta["result"] == {"blob": "x" * size}


# --- Flower links: a server of this module's own, with JOBCAST_FLOWER_URL set

FLOWER_URL = "http://flower.test:5555"


@pytest.fixture(scope="module")
def flower_server(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("flower-server") / "server.log"
    env = {**child_env(), "JOBCAST_FLOWER_URL": FLOWER_URL}
    args = [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            return True
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        if not wait_until(ready, START_TIMEOUT, interval=0.2) or proc.poll():
            pytest.fail(f"server did not become ready:\n{log_tail(log_path)}")
        yield url
    finally:
        stop_process(proc, group=True)


async def test_admins_see_flower_links_in_rest(
    flower_server: str, sio_client: Any, tokens: Any, redis_client: Any
) -> None:
    user_id, token, client = await user(sio_client, tokens, "flower")
    single = await submit(steady, user_id=user_id, steps=1, seconds=0.1)
    canvas_job = await submit(
        group(steady.s(steps=1, seconds=0.1) for _ in range(2)), user_id=user_id
    )
    for job in (single, canvas_job):
        await client.wait_for(is_terminal(job), what=f"the end of {job}")
    members = celery_helpers.member_task_ids(redis_client, canvas_job)

    async with httpx.AsyncClient(base_url=flower_server, timeout=15) as http:
        owner = (await http.get(f"/api/v1/jobs/{single}", headers=bearer(token))).json()["data"]
        assert "flowerUrl" not in owner, "the link is for admins only"
        admin = (await http.get(f"/api/v1/jobs/{single}", headers=bearer(tokens.admin))).json()
        assert admin["data"]["flowerUrl"] == f"{FLOWER_URL}/task/{single}"
        admin = await http.get(f"/api/v1/jobs/{canvas_job}", headers=bearer(tokens.admin))
        body = admin.json()["data"]
        assert body["flowerUrls"] == [f"{FLOWER_URL}/task/{task_id}" for task_id in members]
        assert body["flowerUrl"] == body["flowerUrls"][0]
        listed = (await http.get("/api/v1/jobs", headers=bearer(token))).json()["data"]["jobs"]
        assert {j["jobId"] for j in listed} == {single, canvas_job}
        assert all("flowerUrl" not in j for j in listed)
