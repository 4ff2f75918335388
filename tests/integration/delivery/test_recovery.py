"""Recovery after ``lastEventId`` (SPEC section 5), against the session's server.

- A connection that drops while events keep coming (Socket.IO over WebSocket and over
  polling, through a TCP proxy that cuts it; the native endpoint, closed and reopened)
  resumes with ``lastEventId``: every inbox event exactly once, in order,
  ``recovered: true``.
- A bogus, foreign (another user's event) or too old (outside the time window, or trimmed
  out of the user's inbox) ``lastEventId`` gives ``recovered: false`` and no foreign event.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from notifier.contract.events import now_ms
from notifier.transport.client_session import socketio_client
from tests.support.fault_helpers import (
    INBOX_TYPES,
    FailoverProxy,
    History,
    RecordingClient,
    connect_all,
    finish_producer,
    produce,
    start_producer,
)
from tests.support.helpers import connect_native
from tests.support.keyspace import events_in_streams
from tests.support.processes import Server
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

JOBS, STEPS = 3, 5


@pytest.mark.parametrize(
    ("transport", "drop"),
    [("websocket", "outage"), ("polling", "outage"), ("polling", "mid-response")],
    ids=["websocket", "polling", "polling-cut-mid-response"],
)
async def test_sio_connection_drop_resumes_without_gap(
    transport: str, drop: str, tmp_path: Path, server: Server, redis_client: Any, tokens: Any
) -> None:
    user = f"drop-{transport}-{drop}"
    out = tmp_path / "events.jsonl"
    proxy = FailoverProxy(server.port)
    client = None
    producer = None
    try:
        await proxy.start()
        await produce("queued", out, users=[user], jobs=JOBS, prefix="d")
        client = RecordingClient(proxy.url, tokens.make(user), user=user, transports=[transport])
        await connect_all([client])
        for job in range(JOBS):
            assert (await client.subscribe(f"d-{user}-{job}"))["type"] == "subscribed"
        producer = start_producer(
            "run", out, users=[user], jobs=JOBS, prefix="d", steps=STEPS, seconds=3, broadcasts=1
        )
        total = JOBS * (STEPS + 3) + STEPS + 2
        assert await wait_until_async(
            lambda: events_in_streams(redis_client) >= total * 0.4 and bool(client.last_event_id),
            20,
            interval=0.05,
        )
        # The network drops until the client notices (polling: when a request fails; it
        # may take up to Engine.IO's ping interval + timeout); then the helper reconnects
        # with its lastEventId. "mid-response": only a long-poll's response is cut, after
        # its headers (what an outage does when it strikes there; python-engineio's client
        # alone would stay "connected" to nothing, see client_session._EngineIOClient).
        if drop == "outage":
            proxy.down()
        else:
            proxy.cut_next_get_response()
        noticed = await wait_until_async(lambda: not client._sio.connected, 30, interval=0.05)
        proxy.up()
        assert noticed, "the client never noticed the network was down"
        assert drop == "outage" or proxy.cut_responses == 1
        history = History(await finish_producer(producer, out))
        producer = None
        await wait_until_async(
            lambda: (
                len(client.welcomes) >= 2
                and set(history.inbox(user)) <= {m.get("eventId") for m in client.raw}
            ),
            30,
            interval=0.05,
        )
        await asyncio.sleep(1.0)
        assert len(client.welcomes) >= 2, "the client never reconnected"
        assert all(w["recovered"] is True for w in client.welcomes[1:]), client.welcomes
        history.check(user, client.raw)
    finally:
        if producer is not None:
            producer.kill()
            producer.wait()
        if client is not None:
            await client.close()
        await proxy.close()


async def test_native_reconnect_resumes_without_gap(
    tmp_path: Path, server: Server, redis_client: Any, tokens: Any
) -> None:
    user = "drop-native"
    out = tmp_path / "events.jsonl"
    producer = None
    first = second = None
    try:
        await produce("queued", out, users=[user], jobs=JOBS, prefix="n")
        first = await connect_native(server.native_url, tokens.make(user))
        await first.wait_for_type("connection_established")
        for job in range(JOBS):
            answer = await first.request("subscribe_job", jobId=f"n-{user}-{job}")
            assert answer["type"] == "subscribed", answer
        producer = start_producer(
            "run", out, users=[user], jobs=JOBS, prefix="n", steps=STEPS, seconds=3, broadcasts=1
        )
        await first.wait_for_type("system_notification", within=20)
        await first.close()
        last = [m["eventId"] for m in first.messages if "eventId" in m and not m.get("snapshot")]
        await asyncio.sleep(0.5)  # events keep coming while it is away

        second = await connect_native(
            server.native_url, tokens.make(user), query={"lastEventId": last[-1]}
        )
        welcome = await second.wait_for_type("connection_established")
        assert welcome["recovered"] is True, welcome
        for job in range(JOBS):
            await second.request("subscribe_job", jobId=f"n-{user}-{job}")
        history = History(await finish_producer(producer, out))
        producer = None
        await wait_until_async(
            lambda: (
                set(history.inbox(user))
                <= {m.get("eventId") for m in first.messages}
                | {m.get("eventId") for m in second.messages}
            ),
            20,
            interval=0.05,
        )
        await second.settle(0.5)
        history.check(user, [*first.messages, *second.messages])
    finally:
        if producer is not None:
            producer.kill()
            producer.wait()
        for client in (first, second):
            if client is not None:
                await client.close()


async def own_inbox_only(client: Any, user: str, history: History | None = None) -> None:
    """Everything the connection got that comes from the stream is the user's own or a
    broadcast."""
    await client.settle(0.3)
    for msg in client.messages:
        if "eventId" not in msg or msg.get("type") not in INBOX_TYPES:
            continue
        if msg.get("jobId"):
            assert f"-{user}-" in msg["jobId"], f"{user} got a foreign event: {msg}"


@pytest.mark.parametrize("endpoint", ["socketio", "native"])
async def test_bad_last_event_ids_are_not_recovered(
    endpoint: str, tmp_path: Path, server: Server, tokens: Any
) -> None:
    # alice-r and bob-r each have finished jobs; alice-r also has jobs trimmed out of her
    # inbox (it keeps the newest 1,000 events).
    records = await produce(
        "completions", tmp_path / "a.jsonl", users=["alice-r"], count=1005, prefix="r"
    )
    bob = await produce("completions", tmp_path / "b.jsonl", users=["bob-r"], count=3, prefix="r")
    trimmed = records[0]["eventId"]
    kept = records[-2]["eventId"]
    foreign = bob[-1]["eventId"]
    ancient = f"{now_ms() - 25 * 3600 * 1000}-0"

    async def connect(last_event_id: Any) -> Any:
        token = tokens.make("alice-r")
        if endpoint == "native":
            client = await connect_native(
                server.native_url, token, query={"lastEventId": str(last_event_id)}
            )
        else:
            client = await _sio_with_last_event_id(server.url, token, last_event_id)
        await client.wait_for_type("connection_established")
        return client

    cases: list[Any] = [
        "not-an-id",
        "1-2-3",
        "99999999999999999999-0",  # ms far in the future
        f"{now_ms() + 3600 * 1000}-0",  # an hour ahead: no such event
        foreign,
        ancient,
        trimmed,
    ]
    if endpoint == "socketio":
        cases.append(12345)  # not even a string
    for last_event_id in cases:
        client = await connect(last_event_id)
        try:
            welcome = client.messages[0]
            assert welcome["type"] == "connection_established", welcome
            assert welcome["recovered"] is False, f"lastEventId {last_event_id!r}: {welcome}"
            await own_inbox_only(client, "alice-r")
            assert not [m for m in client.messages if m.get("eventId") == foreign]
        finally:
            await client.close()

    # The control: her own id, inside the window and not trimmed, is recovered: exactly the
    # one event after it.
    client = await connect(kept)
    try:
        assert client.messages[0]["recovered"] is True, client.messages[0]
        await client.settle(0.3)
        replayed = [m["eventId"] for m in client.messages if m.get("type") == "job_completed"]
        assert replayed == [records[-1]["eventId"]], replayed
    finally:
        await client.close()


async def _sio_with_last_event_id(url: str, token: str, last_event_id: Any) -> Any:
    from tests.support.helpers import SOCKETIO_PATH, TIMEOUT, SioClient

    client = SioClient(socketio_client(reconnection=False))
    await client.sio.connect(
        url,
        socketio_path=SOCKETIO_PATH,
        transports=["websocket"],
        auth={"token": token, "lastEventId": last_event_id},
        wait_timeout=TIMEOUT,
    )
    return client
