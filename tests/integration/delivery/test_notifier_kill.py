"""kill -9 the notifier while 2,000 events stream to 20 users; start it again on the same
port; the clients (the product's ``JobcastClient``) reconnect with ``lastEventId``.

What the replay covers is the user's inbox (SPEC section 5): the terminal events of their
jobs and the broadcasts. Those are counted exactly: every one of them exactly once per
client, in stream order, and every reconnection says ``recovered: true``. Progress missed
while the notifier was away is summed up by the snapshot the helper gets when it subscribes
again: each job's last word is its ``job_completed``, and nothing of a job is shown after it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support.fault_helpers import (
    History,
    RecordingClient,
    ServerProc,
    connect_all,
    finish_producer,
    produce,
    start_producer,
)
from tests.support.keyspace import events_in_streams
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

USERS = [f"kill-u{i:02d}" for i in range(20)]
JOBS = 10  # per user
STEPS = 7  # progress reports per job: started + 7 progress + completed = 9 events
BROADCASTS = 2  # per round (9 rounds)
# 20 users x 10 jobs x (queued + 9) = 2,000 job events, plus 18 broadcasts.
EXPECTED_EVENTS = len(USERS) * JOBS * (STEPS + 3) + BROADCASTS * (STEPS + 2)


async def test_notifier_kill9_and_restart(tmp_path: Path, redis_client: Any, tokens: Any) -> None:
    server = ServerProc(tmp_path, module="api", name="notifier")
    clients: list[RecordingClient] = []
    producer = None
    out = tmp_path / "events.jsonl"
    try:
        await asyncio.to_thread(server.start)
        await produce("queued", out, users=USERS, jobs=JOBS, prefix="k")

        clients = [
            RecordingClient(
                server.url,
                tokens.make(user),
                user=user,
                # half straight to WebSocket, half starting on polling and upgrading
                transports=["websocket"] if n % 2 == 0 else ["polling", "websocket"],
            )
            for n, user in enumerate(USERS)
        ]
        await connect_all(clients)
        for client in clients:
            for job in range(JOBS):
                answer = await client.subscribe(f"k-{client.user}-{job}")
                assert answer.get("type") == "subscribed", answer

        producer = start_producer(
            "run", out, users=USERS, jobs=JOBS, prefix="k", steps=STEPS, seconds=6,
            broadcasts=BROADCASTS,
        )  # fmt: skip

        # Kill once a good part of the stream has gone out and every client has had some of
        # it live (so each reconnects with a lastEventId of its own).
        def midstream() -> bool:
            return events_in_streams(redis_client) >= EXPECTED_EVENTS * 0.4 and all(
                c.last_event_id for c in clients
            )

        assert await wait_until_async(midstream, 20, interval=0.05), "the stream never got going"
        server.kill9()
        await asyncio.sleep(0.5)  # events keep coming while nothing serves the clients
        await asyncio.to_thread(server.start)  # the same port

        produced = await finish_producer(producer, out)
        producer = None
        assert len(produced) == EXPECTED_EVENTS
        assert all(r["eventId"] for r in produced), "the bus dropped an event"
        history = History(produced)

        def complete() -> bool:  # every inbox event shown somehow (the checks say how)
            return all(
                set(history.inbox(c.user)) <= {m.get("eventId") for m in c.raw}
                and len(c.welcomes) >= 2
                for c in clients
            )

        await wait_until_async(complete, 40, interval=0.05)
        await asyncio.sleep(1.0)  # a bounded chance for duplicates or late extras

        for client in clients:
            assert len(client.welcomes) >= 2, f"{client.user} never reconnected"
            assert client.welcomes[0]["recovered"] is False
            assert all(w["recovered"] is True for w in client.welcomes[1:]), (
                f"{client.user}: reconnections {client.welcomes[1:]}"
            )
            history.check(client.user, client.raw)
            assert len(history.inbox(client.user)) == JOBS + BROADCASTS * (STEPS + 2)
    finally:
        if producer is not None:
            producer.kill()
            producer.wait()
        await asyncio.gather(*(c.close() for c in clients))
        server.stop()
