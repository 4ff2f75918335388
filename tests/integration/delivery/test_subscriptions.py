"""Who may subscribe to a job, what late subscribers see, and who gets terminal messages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from notifier.contract.events import TERMINAL_STATES
from tests.support.helpers import (
    bearer,
    get_job,
    is_snapshot,
    is_terminal,
    start_job,
    wait_job_status,
)

pytestmark = pytest.mark.integration


async def finished_job(http: Any, token: str, **body: Any) -> str:
    job_id = await start_job(http, token, sections=1, secondsPerSection=0, **body)
    await wait_job_status(http, token, job_id, TERMINAL_STATES)
    return job_id


async def test_only_owner_or_admin_may_subscribe(any_client: Any, http: Any, tokens: Any) -> None:
    job_id = await finished_job(http, tokens.alice)
    bob = await any_client(tokens.bob)
    admin = await any_client(tokens.admin)

    refused = await bob.request("subscribe_job", jobId=job_id)
    assert refused["type"] == "error"
    assert refused["code"] == "forbidden"
    assert refused["request"] == "subscribe_job"
    assert refused["message"]

    start = admin.mark()
    assert await admin.request("subscribe_job", jobId=job_id) == {
        "type": "subscribed",
        "jobId": job_id,
    }
    snapshot = await admin.wait_for(is_snapshot(job_id), after=start, what="the snapshot")
    assert snapshot["type"] == "job_completed"

    await bob.settle()
    assert bob.for_job(job_id) == [], "a refused subscriber must get nothing of the job"
    assert (await bob.ping())["type"] == "pong", "the connection stays open after forbidden"


async def test_rest_job_access(http: Any, tokens: Any) -> None:
    job_id = await finished_job(http, tokens.alice, topic="private")

    mine = await get_job(http, tokens.alice, job_id)
    assert mine.status_code == 200, mine.text
    assert mine.json()["data"]["jobId"] == job_id
    assert mine.json()["data"]["userId"] == "1"
    assert mine.json()["data"]["status"] == "completed"

    for response in (
        await get_job(http, tokens.bob, job_id),
        await http.get(f"/api/v1/jobs/{job_id}/events", headers=bearer(tokens.bob)),
        await http.delete(f"/api/v1/jobs/{job_id}", headers=bearer(tokens.bob)),
    ):
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["code"] == "forbidden"
        assert body["message"]

    as_admin = await get_job(http, tokens.admin, job_id)
    assert as_admin.status_code == 200, as_admin.text
    assert as_admin.json()["data"] == mine.json()["data"]
    events = await http.get(f"/api/v1/jobs/{job_id}/events", headers=bearer(tokens.admin))
    assert events.status_code == 200, events.text

    unknown = await get_job(http, tokens.admin, "no-such-job")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "job_not_found"


async def test_late_subscriber_gets_the_terminal_snapshot(
    any_client: Any, http: Any, tokens: Any
) -> None:
    owner = await any_client(tokens.alice)  # online: the outcome is delivered live
    job_id = await start_job(http, tokens.alice, topic="late", sections=2, secondsPerSection=0.05)
    live = await owner.wait_for(is_terminal(job_id), what="the job's outcome")
    assert live["type"] == "job_completed"

    late = await any_client(tokens.alice)
    start = late.mark()
    assert (await late.request("subscribe_job", jobId=job_id))["type"] == "subscribed"
    snapshot = await late.wait_for(is_snapshot(job_id), after=start, what="the snapshot")
    # The outcome itself, with the job's live output in data (SPEC section 10).
    content = live["result"]["content"]
    output = {"output": content, "outputLength": len(content)}
    assert snapshot == {**live, "snapshot": True, "data": output}


async def test_terminal_message_reaches_each_connection_once(
    any_client: Any, http: Any, tokens: Any
) -> None:
    subscribed = await any_client(tokens.alice)  # owner and subscriber
    bystander = await any_client(tokens.alice)  # owner, not subscribed
    admin = await any_client(tokens.admin)  # subscriber, not owner
    job_id = await start_job(http, tokens.alice, topic="once", sections=3, secondsPerSection=0.2)

    for client in (subscribed, admin):
        start = client.mark()
        await client.request("subscribe_job", jobId=job_id)
        snapshot = await client.wait_for(is_snapshot(job_id), after=start, what="the snapshot")
        assert snapshot["type"] == "job_status_update", (
            f"the job ended before the test subscribed (slow machine?): {snapshot}"
        )
    clients = (subscribed, bystander, admin)
    await asyncio.gather(*(c.wait_for(is_terminal(job_id), what="the outcome") for c in clients))
    await asyncio.gather(*(c.settle() for c in clients))

    for client in clients:
        outcomes = [m for m in client.for_job(job_id) if m["type"] == "job_completed"]
        assert len(outcomes) == 1, f"job_completed {len(outcomes)} times: {outcomes}"
    outcome_ids = {
        m["eventId"] for c in clients for m in c.for_job(job_id) if m["type"] == "job_completed"
    }
    assert len(outcome_ids) == 1, "every connection got the same event"
    # Progress goes to subscribers only.
    assert [m["type"] for m in bystander.for_job(job_id)] == ["job_completed"]
    assert any(
        m["type"] == "job_status_update" and "snapshot" not in m for m in subscribed.for_job(job_id)
    )


async def test_outcome_waits_for_an_offline_owner(any_client: Any, http: Any, tokens: Any) -> None:
    """A job that ends while its owner has no connection open is delivered on the next one."""
    job_id = await finished_job(http, tokens.alice, topic="offline")
    client = await any_client(tokens.alice)
    outcome = await client.wait_for(is_terminal(job_id), what="the outcome, delivered on connect")
    assert outcome["type"] == "job_completed"
    assert "snapshot" not in outcome
    await client.settle()
    assert len(client.for_job(job_id)) == 1
