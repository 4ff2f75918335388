"""End to end: POST a job, watch it over each transport, compare with the job's history.

Each test runs over Socket.IO on WebSocket, Socket.IO polling-only and the native
WebSocket endpoint (the ``any_client`` fixture). How much of a job a subscriber sees live
and how much arrives folded into the subscribe snapshot depends on how fast the worker
picks the job up; so the tests check that the snapshot plus the live messages are the
tail of the job's full history (``GET /api/v1/jobs/{id}/events``), with nothing missing
but progress the server may merge, and check the full history itself for
queued → started → processing 0..100 (with etaSeconds) → job_completed.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.helpers import (
    assert_strictly_increasing,
    event_key,
    is_terminal,
    job_events,
    start_job,
)
from workers.tasks import content_text

pytestmark = pytest.mark.integration

STATUS_ORDER = ("queued", "started", "processing")


async def subscribe_and_follow(client: Any, job_id: str) -> list[dict[str, Any]]:
    """Subscribe to ``job_id``, wait for its terminal message and return every message of
    that job the connection received (snapshot first)."""
    start = client.mark()
    answer = await client.request("subscribe_job", jobId=job_id)
    assert answer == {"type": "subscribed", "jobId": job_id}
    await client.wait_for(is_terminal(job_id), after=start, what=f"the end of job {job_id}")
    await client.settle()
    return client.for_job(job_id)


def assert_transport(client: Any, transport: str) -> None:
    if transport == "native":
        return
    assert client.transport == transport, "the Socket.IO client is not on the transport asked"
    assert client.name_mismatches == [], "Socket.IO event names must equal the message type"


def is_progress(msg: dict[str, Any]) -> bool:
    return msg["type"] == "job_status_update" and msg["data"]["status"] == "processing"


def check_received(messages: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
    """The snapshot, then the history's events after it, each at most once and in order.

    A connection may have unsent progress merged (only the latest value of a run of
    progress updates is guaranteed), but every status change, every terminal event and
    the last progress before each of them must arrive.
    """
    snapshot, live = messages[0], messages[1:]
    assert snapshot.get("snapshot") is True, f"the first message is not the snapshot: {snapshot}"
    assert all("snapshot" not in m for m in live), "only the subscribe answer is a snapshot"
    assert snapshot["type"] == "job_status_update", (
        f"the job finished before the test subscribed (slow machine?): {snapshot}"
    )
    assert_strictly_increasing(messages)
    # The snapshot shows the state the history had reached at its eventId.
    at_snapshot = [e for e in history if e["eventId"] == snapshot["eventId"]]
    assert len(at_snapshot) == 1, f"snapshot eventId {snapshot['eventId']} not in the history"
    for key, value in at_snapshot[0]["data"].items():
        assert snapshot["data"].get(key) == value, f"snapshot {snapshot} vs {at_snapshot[0]}"

    newer = [e for e in history if event_key(e) > event_key(snapshot)]
    by_id = {e["eventId"]: e for e in newer}
    for message in live:
        assert by_id.get(message["eventId"]) == message, f"not in the job's history: {message}"
    received = {m["eventId"] for m in live}
    for event, following in zip(newer, [*newer[1:], None], strict=True):
        merged_away = is_progress(event) and following is not None and is_progress(following)
        if not merged_away:
            assert event["eventId"] in received, f"missed {event}"


def check_status_updates(updates: list[dict[str, Any]]) -> None:
    statuses = [u["data"]["status"] for u in updates]
    ranks = [STATUS_ORDER.index(s) for s in statuses]
    assert ranks == sorted(ranks), f"statuses out of order: {statuses}"
    progress = [u["data"]["progress"] for u in updates if "progress" in u["data"]]
    assert progress == sorted(progress), f"progress went backwards: {progress}"
    assert all(0 <= p <= 100 for p in progress), progress


async def test_job_progress_end_to_end(any_client: Any, http: Any, tokens: Any) -> None:
    client = await any_client(tokens.alice)
    assert_transport(client, any_client.transport)
    job_id = await start_job(http, tokens.alice, topic="e2e", sections=4, secondsPerSection=0.2)

    messages = await subscribe_and_follow(client, job_id)
    history = await job_events(http, tokens.alice, job_id)

    check_received(messages, history)
    done = messages[-1]
    assert [m["type"] for m in messages].count("job_completed") == 1
    assert done["type"] == "job_completed", f"the job did not complete: {done}"
    assert done["result"] == {
        "success": True,
        "contentId": f"content-{job_id}",
        "title": "Generated Content: e2e",
        "sections": 4,
        "content": content_text("e2e", 4),
    }
    received_updates = [m for m in messages if m["type"] == "job_status_update"]
    check_status_updates(received_updates)
    assert received_updates[-1]["data"] == {
        **received_updates[-1]["data"],
        "status": "processing",
        "progress": 100,
    }, "the last update before job_completed must be progress 100"

    # The full history: queued, started, processing 0..100, job_completed.
    assert_strictly_increasing(history)
    assert history[-1] == {**done}
    updates = history[:-1]
    assert [u["data"]["status"] for u in updates[:2]] == ["queued", "started"]
    check_status_updates(updates)
    processing = updates[2:]
    assert processing and all(u["data"]["status"] == "processing" for u in processing)
    assert processing[0]["data"]["progress"] == 0
    assert processing[-1]["data"]["progress"] == 100
    for update in processing[1:]:  # after two progress points an ETA is known
        eta = update["data"].get("etaSeconds")
        assert isinstance(eta, (int, float)) and eta >= 0, f"no etaSeconds: {update}"
    for message in history:
        assert message["jobId"] == job_id
        assert isinstance(message["timestamp"], int)


async def test_failing_job_ends_in_job_error(any_client: Any, http: Any, tokens: Any) -> None:
    client = await any_client(tokens.alice)
    assert_transport(client, any_client.transport)
    job_id = await start_job(
        http, tokens.alice, topic="boom", sections=3, secondsPerSection=0.1, failAtSection=2
    )

    messages = await subscribe_and_follow(client, job_id)

    failed = messages[-1]
    assert failed["type"] == "job_error", f"expected job_error, got {failed}"
    assert failed["error"] == "Generation failed: section 2 of 'boom' could not be written"
    assert failed["data"] == {"code": "task_failed", "exceptionType": "GenerationError"}
    assert not [m for m in messages if m["type"] == "job_completed"]
    assert [m["type"] for m in messages].count("job_error") == 1
    assert_strictly_increasing(messages)
    check_status_updates([m for m in messages if m["type"] == "job_status_update"])

    response = await http.get(
        f"/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {tokens.alice}"}
    )
    assert response.status_code == 200, response.text
    job = response.json()["data"]
    assert job["status"] == "failed"
    assert job["errorCode"] == "task_failed"
    assert job["error"] == failed["error"]


async def test_polling_upgrades_to_websocket(sio_client: Any, http: Any, tokens: Any) -> None:
    """A default client starts on long-polling and upgrades; nothing is lost on the way."""
    client = await sio_client(tokens.alice, transports=["polling", "websocket"])
    job_id = await start_job(http, tokens.alice, topic="upgrade", sections=2, secondsPerSection=0.1)
    messages = await subscribe_and_follow(client, job_id)
    assert client.transport == "websocket"
    assert messages[-1]["type"] == "job_completed"
    assert_strictly_increasing(messages)
