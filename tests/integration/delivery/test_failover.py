"""Two notifier instances; kill -9 one mid-stream; its clients fail over to the other.

Instance A is the session's server (``python -m api``), instance B a ``python -m notifier``
of this test's own, reached through a TCP proxy that fails over to A when B dies, as a
load balancer would. Each user has one tab on A and one on B (through the proxy). Every
tab must get every inbox event of its user exactly once, in order: the tab on A live, the
tab on B live until the kill, then by replay on A (``recovered: true``), then live on A.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import child_env
from tests.support.fault_helpers import (
    FailoverProxy,
    History,
    RecordingClient,
    ServerProc,
    connect_all,
    finish_producer,
    produce,
    start_producer,
)
from tests.support.keyspace import events_in_streams
from tests.support.processes import Server
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

USERS = [f"fo-u{i}" for i in range(4)]
JOBS = 5
STEPS = 6
BROADCASTS = 1
EXPECTED_EVENTS = len(USERS) * JOBS * (STEPS + 3) + BROADCASTS * (STEPS + 2)


async def test_failover_to_the_other_instance(
    tmp_path: Path, server: Server, redis_client: Any, tokens: Any
) -> None:
    instance_b = ServerProc(tmp_path, module="notifier", name="instance-b", env=child_env())
    proxy = FailoverProxy(instance_b.port)
    tabs: list[RecordingClient] = []
    producer = None
    out = tmp_path / "events.jsonl"
    try:
        await asyncio.to_thread(instance_b.start)
        await proxy.start()
        await produce("queued", out, users=USERS, jobs=JOBS, prefix="fo")

        on_a = [
            RecordingClient(server.url, tokens.make(u), user=u, transports=["websocket"])
            for u in USERS
        ]
        on_b = [
            RecordingClient(
                proxy.url,
                tokens.make(u),
                user=u,
                transports=["websocket"] if n % 2 == 0 else ["polling"],
            )
            for n, u in enumerate(USERS)
        ]
        tabs = [*on_a, *on_b]
        await connect_all(tabs)
        for tab in tabs:
            for job in range(JOBS):
                answer = await tab.subscribe(f"fo-{tab.user}-{job}")
                assert answer.get("type") == "subscribed", answer

        producer = start_producer(
            "run", out, users=USERS, jobs=JOBS, prefix="fo", steps=STEPS, seconds=4,
            broadcasts=BROADCASTS,
        )  # fmt: skip

        def midstream() -> bool:
            return events_in_streams(redis_client) >= EXPECTED_EVENTS * 0.35 and all(
                t.last_event_id for t in on_b
            )

        assert await wait_until_async(midstream, 20, interval=0.05), "the stream never got going"
        instance_b.kill9()
        proxy.switch(server.port)  # the balancer notices and sends B's clients to A

        produced = await finish_producer(producer, out)
        producer = None
        assert len(produced) == EXPECTED_EVENTS
        history = History(produced)

        def complete() -> bool:
            return all(
                set(history.inbox(t.user)) <= {m.get("eventId") for m in t.raw} for t in tabs
            ) and all(len(t.welcomes) >= 2 for t in on_b)

        await wait_until_async(complete, 30, interval=0.05)
        await asyncio.sleep(1.0)  # a bounded chance for duplicates or late extras

        for tab in on_a:
            assert len(tab.welcomes) == 1, f"{tab.user}'s tab on A reconnected"
            history.check(tab.user, tab.raw, label=f"{tab.user} on A")
        for tab in on_b:
            assert len(tab.welcomes) >= 2, f"{tab.user}'s tab on B never came back"
            assert all(w["recovered"] is True for w in tab.welcomes[1:]), tab.welcomes
            history.check(tab.user, tab.raw, label=f"{tab.user} on B, then A")
    finally:
        if producer is not None:
            producer.kill()
            producer.wait()
        await asyncio.gather(*(t.close() for t in tabs))
        await proxy.close()
        instance_b.stop()
