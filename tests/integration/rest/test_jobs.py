"""The jobs REST API: validation, listing, history catch-up."""

from __future__ import annotations

from typing import Any

import pytest

from notifier.contract.events import TERMINAL_STATES
from tests.support.helpers import bearer, job_events, start_job, wait_job_status

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"topic": "x", "sections": 0}, "sections"),
        ({"topic": "x", "sections": "many"}, "sections"),
        ({"topic": "x", "secondsPerSection": -1}, "secondsPerSection"),
        ({"sections": 2}, "topic"),
        ({"topic": ""}, "topic"),
        ({"topic": "x", "failAtSection": 0}, "failAtSection"),
        ({"topic": "x", "sections": 2, "failAtSection": 3}, "failAtSection"),
        ({"topic": "x", "colour": "blue"}, "colour"),
    ],
)
async def test_invalid_job_request_names_the_field(
    http: Any, tokens: Any, body: dict[str, Any], field: str
) -> None:
    response = await http.post("/api/v1/jobs", json=body, headers=bearer(tokens.alice))
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["code"] == "validation_error"
    assert field in answer["message"], answer


async def test_list_jobs_newest_first_and_only_mine(http: Any, tokens: Any) -> None:
    first = await start_job(http, tokens.alice, topic="one", sections=1, secondsPerSection=0)
    second = await start_job(http, tokens.alice, topic="two", sections=1, secondsPerSection=0)
    theirs = await start_job(http, tokens.bob, topic="bob's", sections=1, secondsPerSection=0)
    for job_id in (first, second):
        await wait_job_status(http, tokens.alice, job_id, TERMINAL_STATES)

    response = await http.get("/api/v1/jobs", headers=bearer(tokens.alice))
    assert response.status_code == 200, response.text
    jobs = response.json()["data"]["jobs"]
    assert [job["jobId"] for job in jobs] == [second, first]
    assert theirs not in {job["jobId"] for job in jobs}
    for job in jobs:
        assert job["userId"] == "1"
        assert job["status"] == "completed"
        assert job["progress"] == 100
        assert job["result"]["success"] is True

    bobs = (await http.get("/api/v1/jobs", headers=bearer(tokens.bob))).json()["data"]["jobs"]
    assert [job["jobId"] for job in bobs] == [theirs]


async def test_job_events_after_an_id(http: Any, tokens: Any) -> None:
    job_id = await start_job(http, tokens.alice, topic="history", sections=2, secondsPerSection=0)
    await wait_job_status(http, tokens.alice, job_id, TERMINAL_STATES)

    history = await job_events(http, tokens.alice, job_id)
    assert history[0]["data"]["status"] == "queued"
    assert history[-1]["type"] == "job_completed"
    assert all(message["jobId"] == job_id for message in history)
    for i in (0, 1, len(history) - 1):
        assert (
            await job_events(http, tokens.alice, job_id, after=history[i]["eventId"])
            == (history[i + 1 :])
        )


@pytest.mark.parametrize("after", ["yesterday", "12", "1-2-3", "\u0661\u0662-\u0660"])
async def test_job_events_refuse_a_bogus_after(http: Any, tokens: Any, after: str) -> None:
    job_id = await start_job(http, tokens.alice, sections=1, secondsPerSection=0)
    response = await http.get(
        f"/api/v1/jobs/{job_id}/events", params={"after": after}, headers=bearer(tokens.alice)
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert "after" in response.json()["message"]


async def test_health_endpoints_need_no_token(http: Any) -> None:
    assert (await http.get("/healthz")).status_code == 200
    ready = await http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
