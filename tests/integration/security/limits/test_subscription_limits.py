"""Subscriptions per connection (SPEC section 8): the 101st job subscription and, on this
package's limits server, the 2nd channel subscription are refused ``too_many_subscriptions``;
re-subscribing takes no new slot and unsubscribing frees one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.fault_helpers import produce
from tests.support.helpers import Tokens
from tests.support.hostile_helpers import SOCKET_KINDS, clients, open_client
from tests.support.limits_helpers import BURST, RATE, all_kinds
from tests.support.processes import Server

pytestmark = pytest.mark.integration


async def test_101st_job_subscription(
    limits_server: Server, tokens: Tokens, tmp_path: Path
) -> None:
    user = "subs-limit"
    await produce("queued", tmp_path / "jobs.jsonl", users=user, jobs=101, prefix="lim")
    jobs = [f"lim-{user}-{n}" for n in range(101)]

    async def check(kind: str) -> None:
        async with clients() as bag:
            client = await open_client(kind, limits_server.url, tokens.make(user))
            bag.append(client)
            for n, job in enumerate(jobs[:100]):
                if n >= BURST - 5:
                    await asyncio.sleep(1.1 / RATE)  # under the rate limit
                answer = await client.request("subscribe_job", jobId=job)
                assert answer == {"type": "subscribed", "jobId": job}, (n, answer)
            refused = await client.request("subscribe_job", jobId=jobs[100])
            assert (refused["type"], refused["code"]) == ("error", "too_many_subscriptions")
            assert refused["message"] and refused["request"] == "subscribe_job"
            again = await client.request("subscribe_job", jobId=jobs[0])
            assert again["type"] == "subscribed", "re-subscribing takes no new slot"
            await client.request("unsubscribe_job", jobId=jobs[1])
            freed = await client.request("subscribe_job", jobId=jobs[100])
            assert freed == {"type": "subscribed", "jobId": jobs[100]}

    await all_kinds(check, ("native", "websocket"))  # 2 connections: the per-user limit


@pytest.mark.parametrize("kind", SOCKET_KINDS)
async def test_channel_subscription_limit(limits_server: Server, tokens: Tokens, kind: str) -> None:
    async with clients() as bag:
        client = await open_client(kind, limits_server.url, tokens.make(f"chan-{kind}"))
        bag.append(client)
        assert (await client.request("subscribe_channel", channel="notifications"))["type"] == (
            "subscribed"
        )
        refused = await client.request("subscribe_channel", channel="maintenance")
        assert (refused["type"], refused["code"]) == ("error", "too_many_subscriptions")
        again = await client.request("subscribe_channel", channel="notifications")
        assert again["type"] == "subscribed"
        await client.request("unsubscribe_channel", channel="notifications")
        now = await client.request("subscribe_channel", channel="maintenance")
        assert now == {"type": "subscribed", "channel": "maintenance"}
        assert (await client.ping())["type"] == "pong"
