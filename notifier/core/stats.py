"""Cluster-wide connection statistics: each instance publishes its figures, readers sum them.

Every instance rewrites its own stats hash (and, when it changed, the set of its users)
once a second with a short expiry, and keeps a lease in ``keys.INSTANCES``; an
instance that died without cleaning up drops out when its lease lapses.
"""

from __future__ import annotations

from typing import Any

from notifier.contract import keys
from notifier.contract.events import now_ms
from notifier.contract.keys import Keyspace
from notifier.core.bus import AsyncRedis, text
from notifier.core.presence import live_connections

TRANSPORTS = ("websocket", "polling", "native")
FIGURES = ("activeConnections", "activeJobSubscriptions", "activeChannelSubscriptions")


async def publish_instance(
    client: AsyncRedis,
    instance_id: str,
    figures: dict[str, int],
    users: set[str] | None,
    ttl_seconds: float,
) -> None:
    """Write one instance's figures; ``users`` only when they changed since last time."""
    ttl_ms = int(ttl_seconds * 1000)
    async with client.pipeline(transaction=False) as pipe:
        pipe.hset(keys.instance_stats(instance_id), mapping=dict(figures))  # type: ignore[arg-type]
        pipe.pexpire(keys.instance_stats(instance_id), ttl_ms)
        if users is not None:
            pipe.delete(keys.instance_users(instance_id))
            if users:
                pipe.sadd(keys.instance_users(instance_id), *users)
        pipe.pexpire(keys.instance_users(instance_id), ttl_ms)
        pipe.zadd(keys.INSTANCES, {instance_id: now_ms() + ttl_ms})
        await pipe.execute()


async def withdraw_instance(client: AsyncRedis, instance_id: str) -> None:
    async with client.pipeline(transaction=False) as pipe:
        pipe.delete(keys.instance_stats(instance_id), keys.instance_users(instance_id))
        pipe.zrem(keys.INSTANCES, instance_id)
        await pipe.execute()


async def cluster_stats(client: AsyncRedis) -> dict[str, Any]:
    """The figures of ``GET /api/v1/websocket/stats``, summed over live instances."""
    now = now_ms()
    await client.zremrangebyscore(keys.INSTANCES, "-inf", now)
    instances = [text(i) for i in await client.zrange(keys.INSTANCES, 0, -1)]
    totals: dict[str, Any] = dict.fromkeys(FIGURES, 0)
    by_transport = dict.fromkeys(TRANSPORTS, 0)
    delivered = 0
    live = 0
    if instances:
        async with client.pipeline(transaction=False) as pipe:
            for instance in instances:
                pipe.hgetall(keys.instance_stats(instance))
            hashes = await pipe.execute()
        for figures in hashes:
            if not figures:
                continue
            live += 1
            for name in FIGURES:
                totals[name] += int(figures.get(name, 0))
            for transport in TRANSPORTS:
                by_transport[transport] += int(figures.get(f"transport:{transport}", 0))
            delivered += int(figures.get("eventsDelivered", 0))
    users: set[str] = set()
    if instances:  # one key per command: the sets may live on different cluster nodes
        async with client.pipeline(transaction=False) as pipe:
            for instance in instances:
                pipe.smembers(keys.instance_users(instance))
            for members in await pipe.execute():
                users.update(text(member) for member in members or ())
    active_users = len(users)
    return {
        **totals,
        "activeUsers": active_users,
        "instances": live,
        "connectionsByTransport": by_transport,
        "eventsDelivered": delivered,
    }


async def user_connections(client: AsyncRedis, space: Keyspace, user_id: str) -> int:
    """The user's open connections on every live instance."""
    return await live_connections(client, space, user_id)
