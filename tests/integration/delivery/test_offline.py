"""Offline delivery and ``ack`` (SPEC section 5).

Without ``lastEventId``, the terminal events of a user's jobs that finished while none of
their connections was open (also before their first ever connection) are delivered on
their next connection; ``ack`` {eventId} moves the user's cursor, so acknowledged events
are not delivered again, whatever happens to the connection that acknowledged them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.env import child_env
from tests.support.fault_helpers import ServerProc
from tests.support.helpers import (
    assert_strictly_increasing,
    bearer,
    connect_native,
    connect_sio,
    start_job,
    wait_job_status,
)
from tests.support.processes import Server

pytestmark = pytest.mark.integration


async def three_jobs_while_offline(http: httpx.AsyncClient, token: str) -> list[str]:
    jobs = [
        await start_job(http, token, topic=f"offline {n}", sections=1, secondsPerSection=0)
        for n in range(3)
    ]
    for job_id in jobs:
        await wait_job_status(http, token, job_id, ("completed",), within=40)
    return jobs


def assert_inbox(got: list[dict[str, Any]], jobs: list[str]) -> None:
    """Each job's completion exactly once, in stream order (the worker has two processes:
    the jobs may finish in any order)."""
    assert sorted(m["jobId"] for m in got) == sorted(jobs), got
    assert_strictly_increasing(got)


def completions(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("type") == "job_completed" and not m.get("snapshot")]


async def test_offline_user_gets_three_completions_once(
    http: httpx.AsyncClient, server: Server, tokens: Any
) -> None:
    token = tokens.make("offline-carol")
    jobs = await three_jobs_while_offline(http, token)  # carol has never connected

    client = await connect_sio(server.url, token, ["websocket"])
    try:
        welcome = await client.wait_for_type("connection_established")
        assert welcome["recovered"] is False
        await client.settle(0.5)
        got = completions(client.messages)
        assert_inbox(got, jobs)
        await client.send("ack", eventId=got[-1]["eventId"])
        await client.ping()
    finally:
        await client.close()

    again = await connect_native(server.native_url, token)
    try:
        await again.wait_for_type("connection_established")
        await again.settle(0.5)
        assert completions(again.messages) == [], "acknowledged events were delivered again"
    finally:
        await again.close()


async def test_ack_survives_the_instance_that_received_it(
    http: httpx.AsyncClient, server: Server, tokens: Any, tmp_path: Path
) -> None:
    """The user acknowledges on instance B, which is then killed (so it never records how
    far it served the user); once B's connection lease has lapsed the user connects to A:
    nothing acknowledged may come again."""
    token = tokens.make("offline-dave")
    jobs = await three_jobs_while_offline(http, token)
    instance_b = ServerProc(
        tmp_path,
        module="notifier",
        name="instance-b",
        env=child_env(JOBCAST_PRESENCE_LEASE_SECONDS="2"),
    )
    try:
        await asyncio.to_thread(instance_b.start)
        on_b = await connect_sio(instance_b.url, token, ["websocket"])
        await on_b.wait_for_type("connection_established")
        await on_b.settle(0.5)
        got = completions(on_b.messages)
        assert_inbox(got, jobs)
        await on_b.send("ack", eventId=got[-1]["eventId"])
        await on_b.ping()  # the ack has been handled
        instance_b.kill9()
        await on_b.close()

        async def offline() -> bool:
            status = await http.get(
                "/api/v1/websocket/user/offline-dave/status", headers=bearer(token)
            )
            return status.json()["data"]["connected"] is False

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not await offline():
            assert loop.time() < deadline, "B's connection lease never lapsed"
            await asyncio.sleep(0.2)

        on_a = await connect_sio(server.url, token, ["websocket"])
        try:
            await on_a.wait_for_type("connection_established")
            await on_a.settle(0.5)
            again = completions(on_a.messages)
            assert again == [], (
                f"{len(again)} acknowledged job_completed delivered again: "
                f"{[m['eventId'] for m in again]} (acked up to {got[-1]['eventId']})"
            )
        finally:
            await on_a.close()
    finally:
        instance_b.stop()


async def test_seen_live_is_not_delivered_offline(
    http: httpx.AsyncClient, server: Server, tokens: Any
) -> None:
    """A job that finished while the user was connected is not offline-delivered later."""
    token = tokens.make("offline-erin")
    client = await connect_sio(server.url, token, ["websocket"])
    try:
        await client.wait_for_type("connection_established")
        job_id = await start_job(http, token, topic="live", sections=1, secondsPerSection=0)
        await client.wait_for_type("job_completed", jobId=job_id, within=40)
    finally:
        await client.close()
    job_offline = await start_job(http, token, topic="away", sections=1, secondsPerSection=0)
    await wait_job_status(http, token, job_offline, ("completed",), within=40)

    again = await connect_sio(server.url, token, ["polling"])
    try:
        await again.wait_for_type("connection_established")
        await again.settle(0.5)
        assert [m["jobId"] for m in completions(again.messages)] == [job_offline]
    finally:
        await again.close()
