"""The notifier's own link to Redis fails: reset in the middle of a blocking read, then
Redis frozen for 10 s (SIGSTOP/SIGCONT). No loss, no duplicate.

The notifier (``python -m api``) reaches its Redis through a TCP proxy of the test's own;
the producer publishes to Redis directly. A client stays connected throughout: its
subscribed jobs' events and the broadcasts must reach it exactly once, in order, as the
reader resumes from its own last id after each failure (SPEC section 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.env import child_env, free_port
from tests.support.fault_helpers import (
    FailoverProxy,
    History,
    RecordingClient,
    ServerProc,
    connect_all,
    finish_producer,
    produce,
    read_records,
    start_producer,
)
from tests.support.processes import RedisServer
from tests.support.waiting import wait_until_async

# Stops, restarts or proxies the one Redis: not in the Redis Cluster phase.
pytestmark = [pytest.mark.integration, pytest.mark.single_redis]

USERS = ["link-u1", "link-u2"]
JOBS, STEPS = 3, 6
FREEZE_SECONDS = 10


async def test_reset_mid_read_and_frozen_redis(tmp_path: Path, tokens: Any) -> None:
    redis = RedisServer(free_port(), tmp_path)
    proxy = FailoverProxy(redis.port)
    server: ServerProc | None = None
    clients: list[RecordingClient] = []
    producer = None
    frozen = False
    out = tmp_path / "events.jsonl"
    direct = child_env(REDIS_URL=redis.url)
    try:
        redis.start()
        await proxy.start()
        server = ServerProc(tmp_path, env=child_env(REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0"))
        await asyncio.to_thread(server.start)
        await produce("queued", out, env=direct, users=USERS, jobs=JOBS, prefix="l1")
        await produce("queued", out, env=direct, users=USERS, jobs=JOBS, prefix="l2")
        clients = [
            RecordingClient(server.url, tokens.make(u), user=u, transports=["websocket"])
            for u in USERS
        ]
        await connect_all(clients)
        for client in clients:
            for prefix in ("l1", "l2"):
                for job in range(JOBS):
                    answer = await client.subscribe(f"{prefix}-{client.user}-{job}")
                    assert answer["type"] == "subscribed", answer

        # 1. Reset the notifier's Redis connections while its reader blocks in XREAD.
        producer = start_producer(
            "run", out, env=direct, users=USERS, jobs=JOBS, prefix="l1", steps=STEPS,
            seconds=3, broadcasts=1,
        )  # fmt: skip
        await asyncio.sleep(1.2)
        proxy.cut()
        await finish_producer(producer, out)

        # 2. Freeze Redis for 10 s; readiness follows; then more events.
        assert redis.proc is not None
        os.kill(redis.proc.pid, signal.SIGSTOP)
        frozen = True
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + FREEZE_SECONDS
            not_ready = False
            while loop.time() < deadline:
                not_ready = not_ready or (await http.get("/readyz")).status_code == 503
                await asyncio.sleep(0.5)
            assert not_ready, "/readyz never said not ready while Redis was frozen"
            os.kill(redis.proc.pid, signal.SIGCONT)
            frozen = False
            producer = start_producer(
                "run", out, env=direct, users=USERS, jobs=JOBS, prefix="l2", steps=STEPS,
                seconds=2, broadcasts=1,
            )  # fmt: skip
            await finish_producer(producer, out, within=60)
            producer = None
            deadline = loop.time() + 20
            while (await http.get("/readyz")).status_code != 200:
                assert loop.time() < deadline, "/readyz never came back"
                await asyncio.sleep(0.2)

        history = History(read_records(out))
        await wait_until_async(
            lambda: all(
                set(history.inbox(c.user)) <= {m.get("eventId") for m in c.raw} for c in clients
            ),
            30,
            interval=0.05,
        )
        await asyncio.sleep(1.0)
        for client in clients:
            assert len(client.welcomes) == 1, "the client had to reconnect"
            history.check(client.user, client.raw)
    finally:
        if redis.proc is not None and frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(redis.proc.pid, signal.SIGCONT)
        if producer is not None:
            producer.kill()
            producer.wait()
        await asyncio.gather(*(c.close() for c in clients))
        if server is not None:  # (in a thread: its shutdown talks to Redis through the proxy)
            await asyncio.to_thread(server.stop)
        await proxy.close()
        redis.stop()
