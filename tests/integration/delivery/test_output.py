"""Live output (SPEC section 10): ``workers.progress.stream(text)`` → ``job_output`` chunks.

The bundled ``generate_content`` streams its sections (a topic with accents, an emoji and
a character outside the BMP, so that offsets are counted in code points) over each
transport; a subscriber that joins mid-job; a client whose connection is cut mid-stream;
a chain whose members stream into the canvas job's output;
a Socket.IO polling reader that stops polling (its outbox joins chunks); 100,000
``stream()`` calls in a tight loop; the ``JOBCAST_OUTPUT_MAX_BYTES`` cut; and the append
script itself, on the Redis the tests run (one Redis, or a Redis Cluster). In every case
the text a client assembles by offset — the snapshot's ``data.output``, then each chunk
starting exactly where the text so far ends — equals what the task wrote.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from notifier.client import JobcastClient
from notifier.contract.events import QUEUED, job_completed, status_update
from notifier.contract.settings import get_settings
from notifier.core.bus import append_output_sync, publish_sync
from tests.support.celery_helpers import SETTLE_SECONDS, submit
from tests.support.fault_helpers import FailoverProxy, fault_worker
from tests.support.helpers import (
    assemble_output,
    assert_strictly_increasing,
    bearer,
    get_job,
    is_terminal,
    start_job,
    wait_job_status,
)
from tests.support.hostile_helpers import EioPolling
from tests.support.keyspace import job_partition, user_partition
from tests.support.processes import Server
from tests.support.waiting import wait_until_async
from workers.tasks import content_text

pytestmark = pytest.mark.integration

TOPIC = "café ☕ 𝄞"


@pytest.fixture(scope="module")
def stream_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with fault_worker(tmp_path_factory.mktemp("stream-worker") / "worker.log"):
        yield


def job_messages(messages: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    """Every message of the job (its output chunks included), in arrival order."""
    return [m for m in messages if m.get("jobId") == job_id and "eventId" in m]


def check_stream(messages: list[dict[str, Any]], job_id: str, content: str) -> None:
    """The snapshot first, then chunks contiguous by offset up to ``content``, the outcome
    after the last chunk, ids strictly increasing."""
    received = job_messages(messages, job_id)
    assert received and received[0].get("snapshot") is True, received[:1]
    assert_strictly_increasing(received)
    assert assemble_output(received, job_id) == content
    kinds = [m["type"] for m in received]
    assert kinds[-1] == "job_completed", kinds[-5:]
    assert kinds.count("job_completed") == 1


async def rest_output(http: httpx.AsyncClient, token: str, job_id: str) -> dict[str, Any]:
    response = await get_job(http, token, job_id)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()["data"]
    return job


async def test_output_streams_in_order_over_every_transport(
    any_client: Any, http: httpx.AsyncClient, tokens: Any
) -> None:
    client = await any_client(tokens.alice)
    job_id = await start_job(http, tokens.alice, topic=TOPIC, sections=3, secondsPerSection=0.3)
    start = client.mark()
    assert (await client.request("subscribe_job", jobId=job_id))["type"] == "subscribed"
    done = await client.wait_for(is_terminal(job_id), after=start, what="the job's end")
    await client.settle()

    content = done["result"]["content"]
    assert content == content_text(TOPIC, 3)
    check_stream(client.messages[start:], job_id, content)
    chunks = [m for m in client.messages[start:] if m.get("type") == "job_output"]
    assert chunks, "no job_output arrived live (did the job end before the subscription?)"
    assert all(m["jobId"] == job_id and m["data"]["text"] for m in chunks)

    job = await rest_output(http, tokens.alice, job_id)
    assert job["output"] == content and job["outputLength"] == len(content)
    assert "outputTruncated" not in job
    listed = await http.get("/api/v1/jobs", headers=bearer(tokens.alice))
    [item] = [j for j in listed.json()["data"]["jobs"] if j["jobId"] == job_id]
    assert item["outputLength"] == len(content) and "output" not in item, "lists stay small"


async def test_a_subscriber_joining_mid_job_continues_from_the_snapshot(
    sio_client: Any, http: httpx.AsyncClient, tokens: Any
) -> None:
    job_id = await start_job(http, tokens.alice, topic=TOPIC, sections=4, secondsPerSection=0.5)

    for _ in range(200):  # bounded: 20 s, 10 requests/s (inside the REST rate limit)
        job = await rest_output(http, tokens.alice, job_id)
        if job["status"] == "processing" and job["outputLength"] > 0:
            break
        await asyncio.sleep(0.1)
    assert job["outputLength"] > 0 and job["status"] == "processing", job
    client = await sio_client(tokens.alice, transports=["polling"])
    start = client.mark()
    assert (await client.request("subscribe_job", jobId=job_id))["type"] == "subscribed"
    done = await client.wait_for(is_terminal(job_id), after=start, what="the job's end")
    await client.settle()

    received = job_messages(client.messages[start:], job_id)
    snapshot = received[0]
    assert snapshot["type"] == "job_status_update", "the job ended before the subscription"
    assert snapshot["data"]["output"], "the snapshot holds no output"
    assert snapshot["data"]["outputLength"] == len(snapshot["data"]["output"])
    check_stream(received, job_id, done["result"]["content"])


async def test_a_cut_connection_reconnects_and_ends_with_the_exact_text(
    server: Server, http: httpx.AsyncClient, tokens: Any
) -> None:
    proxy = FailoverProxy(server.port)
    await proxy.start()
    client = JobcastClient(proxy.url, tokens.alice, transports=["websocket"])
    try:
        await client.connect()
        job_id = await start_job(http, tokens.alice, topic=TOPIC, sections=4, secondsPerSection=0.6)
        assert (await client.subscribe(job_id))["type"] == "subscribed"
        for cut in range(2):  # twice mid-stream, each time with more text written
            grown = len(client.output(job_id)) + 100
            assert await wait_until_async(
                lambda grown=grown: len(client.output(job_id)) > grown, 20
            ), f"the output did not grow before cut {cut}"
            proxy.down()
            await asyncio.sleep(0.7)  # chunks are written meanwhile
            proxy.up()
        done = await wait_job_status(http, tokens.alice, job_id, ["completed"])
        content = done["result"]["content"]
        assert await wait_until_async(lambda: client.output(job_id) == content, 20), (
            f"{len(client.output(job_id))} of {len(content)} code points assembled"
        )
    finally:
        await client.close()
        await proxy.close()


async def test_a_stalled_polling_reader_gets_chunks_joined_and_the_exact_text(
    stream_worker: None, server: Server, redis_client: Any, tokens: Any
) -> None:
    """A raw Engine.IO polling client stops polling while a task streams 240 pieces over
    about 5 s (about 100 chunks at 50 ms): past what its Engine.IO queue takes, its outbox
    joins chunks. When it polls again it gets fewer messages than chunks were published,
    and exactly the text."""
    from tests.support.fault_celery_app import streamed_text, streamer

    user = "slow-output-1"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        eio = EioPolling(http)
        assert (await eio.open()).status_code == 200
        assert (await eio.post("40" + json.dumps({"token": tokens.make(user)}))).is_success
        messages: list[dict[str, Any]] = []

        async def poll() -> None:
            for packet in EioPolling.packets(await eio.get()):
                if packet == "2":
                    await eio.post("3")
                elif packet.startswith("42"):
                    messages.append(json.loads(packet[2:])[1])

        while not any(m.get("type") == "connection_established" for m in messages):
            await poll()
        job_id = await submit(streamer, 240, "x" * 20, 0.02, user_id=user)
        await eio.post("42" + json.dumps(["subscribe_job", {"jobId": job_id}]))
        await asyncio.sleep(5.5)  # no poll: inside the 5 s + 5 s ping deadline
        for _ in range(200):
            if any(m.get("type") == "job_completed" for m in messages):
                break
            await poll()

    check_stream(messages, job_id, streamed_text(240, "x" * 20))
    received = [m for m in messages if m.get("type") == "job_output"]
    part = job_partition(redis_client, job_id)
    published = [
        fields
        for _, fields in redis_client.xrange(part.events)
        if fields.get("t") == "job_output" and fields.get("j") == job_id
    ]
    assert len(received) < len(published), (
        f"{len(received)} messages for {len(published)} chunks: nothing was joined"
    )


async def test_a_hundred_thousand_stream_calls_arrive_exactly(
    stream_worker: None, sio_client: Any, tokens: Any
) -> None:
    from tests.support.fault_celery_app import streamed_text, streamer

    calls, interval_ms = 100_000, get_settings().progress_min_interval_ms
    user = "stream-flood-1"
    client = await sio_client(tokens.make(user))
    job_id = await submit(streamer, calls, "abcd", user_id=user, options={"countdown": 1})
    assert (await client.request("subscribe_job", jobId=job_id))["type"] == "subscribed"
    done = await client.wait_for(is_terminal(job_id), within=120, what="the end of the flood")
    assert done["type"] == "job_completed", done
    await client.settle(SETTLE_SECONDS)

    check_stream(client.messages, job_id, streamed_text(calls, "abcd"))
    chunks = [m for m in client.messages if m.get("type") == "job_output"]
    span = chunks[-1]["timestamp"] - chunks[0]["timestamp"]
    assert len(chunks) <= span / interval_ms + 3, f"{len(chunks)} chunks over {span} ms"
    figures = done["result"]
    print(
        f"\n{calls} stream() calls: {figures['secondsStreaming'] / calls * 1e6:.2f} us each; "
        f"as many report() calls: {figures['secondsReporting'] / calls * 1e6:.2f} us each; "
        f"{len(chunks)} job_output messages"
    )


async def test_output_past_the_limit_is_cut_and_the_task_goes_on(
    stream_worker: None, sio_client: Any, http: httpx.AsyncClient, tokens: Any
) -> None:
    """1,000 pieces of 500 '€' (3 bytes each): about 1.5 MB against the default 1 MiB,
    whose last byte falls inside a '€': the output keeps the whole characters that fit."""
    from tests.support.fault_celery_app import streamed_text, streamer

    limit = get_settings().output_max_bytes
    assert limit == 1024 * 1024, "the tests' worker runs with the default limit"
    user = "stream-limit-1"
    token = tokens.make(user)
    text = streamed_text(1000, "€" * 500)
    expected = text.encode()[:limit].decode(errors="ignore")
    assert len(expected.encode()) == limit - 1, "the cut must fall inside a character"

    client = await sio_client(token)
    job_id = await submit(streamer, 1000, "€" * 500, user_id=user, options={"countdown": 1})
    assert (await client.request("subscribe_job", jobId=job_id))["type"] == "subscribed"
    done = await client.wait_for(is_terminal(job_id), within=60, what="the job's end")
    assert done["type"] == "job_completed", "the task goes on past the limit"
    await client.settle()
    check_stream(client.messages, job_id, expected)

    job = await rest_output(http, token, job_id)
    assert job["output"] == expected and job["outputLength"] == len(expected)
    assert job["outputTruncated"] is True
    late = await sio_client(token)
    start = late.mark()
    await late.request("subscribe_job", jobId=job_id)
    snapshot = await late.wait_for(lambda m: m.get("snapshot") is True, after=start)
    assert snapshot["type"] == "job_completed"
    assert snapshot["data"] == {
        "output": expected,
        "outputLength": len(expected),
        "outputTruncated": True,
    }


async def test_a_chains_members_append_to_the_canvas_jobs_output_in_order(
    stream_worker: None, sio_client: Any, http: httpx.AsyncClient, tokens: Any
) -> None:
    """A chain of three streaming tasks is one job: its output is theirs, in order."""
    from celery import chain

    from tests.support.fault_celery_app import streamed_text, streamer

    user = "stream-chain-1"
    token = tokens.make(user)
    client = await sio_client(token)
    pieces = ("first ", "second ", "third ")
    job_id = await submit(
        chain(*(streamer.si(30, piece, 0.005) for piece in pieces)),
        user_id=user,
        options={"countdown": 1},
    )
    assert (await client.request("subscribe_job", jobId=job_id))["type"] == "subscribed"
    done = await client.wait_for(is_terminal(job_id), within=60, what="the chain's end")
    assert done["type"] == "job_completed", done
    await client.settle()
    expected = "".join(streamed_text(30, piece) for piece in pieces)
    check_stream(client.messages, job_id, expected)
    assert (await rest_output(http, token, job_id))["output"] == expected


def test_the_append_script_cuts_at_a_code_point_and_stops_at_the_outcome(
    redis_client: Any,
) -> None:
    """The script alone, with a 10-byte limit: offsets in code points, a cut that backs
    up out of a 4-byte character, nothing appended once full or after the outcome."""
    settings = get_settings().model_copy(update={"output_max_bytes": 10})
    user, job = "script-1", "script-job-1"
    assert append_output_sync(redis_client, job, user, "x", settings).finished, "unknown job"
    publish_sync(redis_client, status_update(job, user, QUEUED, progress=0), settings)

    first = append_output_sync(redis_client, job, user, "aé", settings)  # 3 bytes
    assert (first.offset, first.length, first.truncated) == (0, 2, False)
    second = append_output_sync(redis_client, job, user, "€𝄞", settings)  # 7 bytes
    assert (second.offset, second.length, second.truncated) == (2, 4, False)
    cut = append_output_sync(redis_client, job, user, "b𝄞", settings)  # 0 bytes left
    assert (cut.event_id, cut.offset, cut.length, cut.truncated) == ("", 4, 4, True)

    part = user_partition(user)
    assert redis_client.get(part.job_output(job)) == "aé€𝄞"
    state = redis_client.hgetall(part.job(job))
    assert (state["outputLength"], state["outputBytes"], state["outputTruncated"]) == (
        "4",
        "10",
        "1",
    )
    assert state["eventId"] == second.event_id, "the snapshot's id is the last chunk's"
    [(_, fields)] = redis_client.xrange(part.events, min=second.event_id, max=second.event_id)
    assert json.loads(fields["p"])["data"] == {"offset": 2, "text": "€𝄞"}

    other, other_job = "script-2", "script-job-2"
    publish_sync(redis_client, status_update(other_job, other, QUEUED), settings)
    partial = append_output_sync(redis_client, other_job, other, "123456789𝄞", settings)
    assert (partial.length, partial.truncated) == (9, True), "the 𝄞 does not fit whole"
    publish_sync(redis_client, job_completed(other_job, other, {}), settings)
    after = append_output_sync(redis_client, other_job, other, "late", settings)
    assert after.finished and after.closed
    assert redis_client.ttl(user_partition(other).job_output(other_job)) > 0, "it expires"
