"""Cancelling a running job: the owner is told on every connection, and the job stays
cancelled even though the task, revoked without ``terminate``, runs to its end."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.helpers import (
    bearer,
    is_job_status,
    start_job,
    wait_job_status,
    wait_task_finished,
)

pytestmark = pytest.mark.integration


async def test_cancel_a_running_job(
    sio_client: Any,
    native_client: Any,
    http: Any,
    tokens: Any,
    redis_client: Any,
    results_client: Any,
) -> None:
    # The owner's connections, none of them subscribed to the job.
    owner_sio = await sio_client(tokens.alice, transports=["websocket"])
    owner_native = await native_client(tokens.alice)
    job_id = await start_job(http, tokens.alice, topic="long", sections=20, secondsPerSection=0.5)
    await wait_job_status(http, tokens.alice, job_id, ("processing",))

    response = await http.delete(f"/api/v1/jobs/{job_id}", headers=bearer(tokens.alice))
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"jobId": job_id, "status": "cancelled"}

    for client in (owner_sio, owner_native):
        cancelled = await client.wait_for(
            is_job_status(job_id, "cancelled"), what="the cancellation"
        )
        assert "snapshot" not in cancelled
        assert isinstance(cancelled["eventId"], str)

    # The task itself was only revoked: wait (bounded) until it has really ended, so a
    # late job_completed would have been published by now.
    assert await wait_task_finished(results_client, job_id) == "SUCCESS"
    for client in (owner_sio, owner_native):
        await client.settle()
        kinds = [m["type"] for m in client.for_job(job_id)]
        assert kinds == ["job_status_update"], f"after cancelled: {client.for_job(job_id)}"

    job = await wait_job_status(http, tokens.alice, job_id, ("cancelled",), within=1)
    assert "result" not in job
    again = await http.delete(f"/api/v1/jobs/{job_id}", headers=bearer(tokens.alice))
    assert again.status_code == 409, again.text
    assert again.json()["code"] == "job_finished"


async def test_cancel_with_terminate_stops_the_task(
    sio_client: Any, http: Any, tokens: Any, redis_client: Any, results_client: Any
) -> None:
    owner = await sio_client(tokens.alice, transports=["websocket"])
    job_id = await start_job(
        http, tokens.alice, topic="stopped", sections=20, secondsPerSection=0.5
    )
    await wait_job_status(http, tokens.alice, job_id, ("processing",))

    response = await http.delete(
        f"/api/v1/jobs/{job_id}", params={"terminate": "true"}, headers=bearer(tokens.alice)
    )
    assert response.status_code == 200, response.text
    await owner.wait_for(is_job_status(job_id, "cancelled"), what="the cancellation")

    assert await wait_task_finished(results_client, job_id, within=20) == "REVOKED"
    await owner.settle()
    kinds = [m["type"] for m in owner.for_job(job_id)]
    assert kinds == ["job_status_update"], f"after cancelled: {owner.for_job(job_id)}"
    job = await wait_job_status(http, tokens.alice, job_id, ("cancelled",), within=1)
    assert job["status"] == "cancelled"
