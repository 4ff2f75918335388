"""Canvas jobs on a real worker: a group, a chord or a chain submitted with an owner is one
job with aggregate progress, one ``started``, one outcome; its members are not jobs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from celery import chain, chord, group

from notifier.contract import keys
from tests.support import celery_helpers
from tests.support.celery_helpers import (
    assert_monotonic,
    follow,
    history,
    member_task_ids,
    progress_values,
    rest_jobs,
    statuses,
    submit,
    wait_celery_state,
)
from tests.support.celery_local_app import add, fail, sleepy, steady, total
from tests.support.helpers import bearer, is_job_status
from tests.support.keyspace import job_partition

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def local_worker(
    redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    yield from celery_helpers.local_worker(tmp_path_factory.mktemp("canvas"))


async def check_one_job(
    client: Any,
    http: httpx.AsyncClient,
    redis_client: Any,
    results_client: Any,
    token: str,
    job: str,
    members: int,
) -> list[dict[str, Any]]:
    """What holds for every canvas that completes: one job to the user, progress that
    never goes down and reaches 100, one queued, one started, one job_completed. Returns
    the job's history."""
    task_ids = member_task_ids(redis_client, job)
    assert len(task_ids) == members and job not in task_ids
    for task_id in task_ids:
        await wait_celery_state(results_client, task_id, ("SUCCESS",))
    await client.settle(celery_helpers.SETTLE_SECONDS)  # members are done: anything late?

    seen = {m["jobId"] for m in client.messages if "jobId" in m}
    assert seen == {job}, f"members' task ids showed up as jobs: {seen - {job}}"
    assert [j["jobId"] for j in await rest_jobs(http, token)] == [job]
    assert not any(redis_client.exists(keys.job_owner(task_id)) for task_id in task_ids)
    assert len(client.of_type("job_completed", jobId=job)) == 1

    live = client.for_job(job)
    assert_monotonic(progress_values(live))
    events = await history(http, token, job)
    kinds = statuses(events)
    assert kinds.count("queued") == 1 and kinds[0] == "queued", kinds
    assert kinds.count("started") == 1 and kinds[1] == "started", kinds
    assert kinds.count("job_completed") == 1 and kinds[-1] == "job_completed", kinds
    progress = progress_values(events)
    assert_monotonic(progress)
    assert progress[-1] == 100
    # The aggregate's ETA: estimated on the way (members take long enough to measure a
    # rate over WINDOW in notifier/contract/lua/canvas_aggregate.lua), 0 at the end.
    updates = [e["data"] for e in events if e["type"] == "job_status_update"]
    assert any(u.get("etaSeconds", 0) > 0 for u in updates), updates
    assert all(u["etaSeconds"] == 0 for u in updates if u.get("progress") == 100)
    return events


async def test_group_of_four(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient, redis_client: Any, results_client: Any
) -> None:
    user_id = "celery-group"
    token = tokens.make(user_id)
    client = await sio_client(token)
    job = await submit(
        group(steady.s(steps=4, seconds=0.3, result=i) for i in range(4)), user_id=user_id
    )
    terminal = await follow(client, job)
    assert terminal["type"] == "job_completed", terminal
    assert terminal["result"] == [0, 1, 2, 3], "a group's result: its members' in order"
    events = await check_one_job(client, http, redis_client, results_client, token, job, members=4)
    assert len(set(progress_values(events))) > 4, "progress moved in steps of the members"


async def test_chord_of_three_and_one(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient, redis_client: Any, results_client: Any
) -> None:
    user_id = "celery-chord"
    token = tokens.make(user_id)
    client = await sio_client(token)
    job = await submit(
        chord([add.s(i, i, seconds=0.4) for i in (1, 2, 3)], total.s(seconds=0.4)), user_id=user_id
    )
    terminal = await follow(client, job)
    assert terminal["type"] == "job_completed", terminal
    assert terminal["result"] == 12, "a chord's result: its body's"
    await check_one_job(client, http, redis_client, results_client, token, job, members=4)


async def test_chain(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient, redis_client: Any, results_client: Any
) -> None:
    user_id = "celery-chain"
    token = tokens.make(user_id)
    client = await sio_client(token)
    job = await submit(
        chain(add.s(1, 1, seconds=0.3), add.s(10, seconds=0.3), add.s(100, seconds=0.3)),
        user_id=user_id,
    )
    terminal = await follow(client, job)
    assert terminal["type"] == "job_completed", terminal
    assert terminal["result"] == 112, "a chain's result: its last task's"
    await check_one_job(client, http, redis_client, results_client, token, job, members=3)


async def test_a_failing_member_fails_the_canvas_once(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient, redis_client: Any, results_client: Any
) -> None:
    user_id = "celery-group-fails"
    token = tokens.make(user_id)
    client = await sio_client(token)
    job = await submit(
        group(
            steady.s(steps=2, seconds=0.2),
            fail.s(seconds=0.3),
            fail.s(seconds=0.6),
            steady.s(steps=2, seconds=1.0),
        ),
        user_id=user_id,
    )
    terminal = await follow(client, job)
    assert terminal["type"] == "job_error", terminal
    assert terminal["data"] == {"code": "task_failed", "exceptionType": "ValueError"}
    for task_id in member_task_ids(redis_client, job):
        await wait_celery_state(results_client, task_id, ("SUCCESS", "FAILURE"))
    await client.settle(celery_helpers.SETTLE_SECONDS)
    assert len([m for m in client.messages if m["type"] in ("job_error", "job_completed")]) == 1
    kinds = statuses(await history(http, token, job))
    assert kinds[-1] == "job_error" and "job_completed" not in kinds, kinds


async def test_cancel_a_running_canvas(
    sio_client: Any, tokens: Any, http: httpx.AsyncClient, redis_client: Any, results_client: Any
) -> None:
    user_id = "celery-group-cancel"
    token = tokens.make(user_id)
    client = await sio_client(token)
    job = await submit(group(sleepy.s(30), sleepy.s(30)), user_id=user_id)
    await client.request("subscribe_job", jobId=job)
    await client.wait_for(is_job_status(job, "processing"), what="the canvas running")
    response = await http.delete(
        f"/api/v1/jobs/{job}", params={"terminate": "true"}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    await client.wait_for(is_job_status(job, "cancelled"), what="cancelled")
    for task_id in member_task_ids(redis_client, job):
        await wait_celery_state(results_client, task_id, ("REVOKED",))
    await client.settle(celery_helpers.SETTLE_SECONDS)
    kinds = statuses(await history(http, token, job))
    assert kinds.count("cancelled") == 1 and kinds[-1] == "cancelled", kinds
    assert not client.of_type("job_completed", jobId=job)
    assert redis_client.zscore(job_partition(redis_client, job).running, job) is None
