"""Who is connected, across every notifier instance, and what each user has already had.

Each user has a set of open connections (``instance|conn``) in their partition. An entry
counts only while its instance's lease in the partition's instances set is live (every
instance renews its lease, once a second, in the partitions of its connected users), so a
dead instance's connections drop out by themselves, with no per-connection renewal. The
per-user cursor records the newest inbox event acknowledged (``ack``) and the newest one
delivered live before the user's last connection closed (``seen``); offline delivery
replays what came after both.
"""

from __future__ import annotations

from collections.abc import Iterable

from notifier.contract import scripts
from notifier.contract.events import now_ms, parse_event_id
from notifier.contract.keys import Keyspace
from notifier.core.bus import AsyncRedis, text

_OPEN_LUA = scripts.source("presence_lease", "presence_prune", "presence_open")
_LIVE_LUA = scripts.source("presence_prune", "presence_live")
_CURSOR_LUA = scripts.source("presence_cursor")


async def live_connections(
    client: AsyncRedis, space: Keyspace, user_id: str, exclude: str = ""
) -> int:
    """The user's open connections on live instances (``exclude``: one ``instance|conn``)."""
    part = space.of_user(user_id)
    count = await client.register_script(_LIVE_LUA)(
        keys=[part.user_connections(user_id), part.instances], args=[now_ms(), exclude]
    )
    return int(count)


class Presence:
    def __init__(
        self,
        client: AsyncRedis,
        space: Keyspace,
        instance: str,
        *,
        retention: int,
        lease_seconds: float,
    ) -> None:
        self._redis = client
        self._space = space
        self._instance = instance
        self._retention = retention
        self._lease_ms = int(lease_seconds * 1000)
        self._open = client.register_script(_OPEN_LUA)
        self._cursor = client.register_script(_CURSOR_LUA)
        #: Partitions whose instances set holds this instance's lease.
        self._leased: set[int] = set()

    def _member(self, conn_id: str) -> str:
        return f"{self._instance}|{conn_id}"

    async def open(self, user_id: str, conn_id: str, limit: int) -> bool:
        """Take a connection slot for the user; False when they already have ``limit``."""
        part = self._space.of_user(user_id)
        now = now_ms()
        self._leased.add(part.index)
        count = await self._open(
            keys=[part.user_connections(user_id), part.instances],
            args=[
                now,
                self._member(conn_id),
                limit,
                self._retention,
                now + self._lease_ms,
                self._instance,
            ],
        )
        return int(count) >= 0

    async def close(self, user_id: str, conn_id: str) -> None:
        part = self._space.of_user(user_id)
        await self._redis.srem(part.user_connections(user_id), self._member(conn_id))

    async def others_online(self, user_id: str, conn_id: str) -> bool:
        """Whether the user has a live connection other than ``conn_id`` on any instance."""
        return await live_connections(self._redis, self._space, user_id, self._member(conn_id)) > 0

    async def advance(self, user_id: str, field: str, event_id: str) -> bool:
        """Move the user's ``acked`` or ``seen`` cursor forward to ``event_id``."""
        part = self._space.of_user(user_id)
        moved = await self._cursor(
            keys=[part.user_cursor(user_id)], args=[field, event_id, self._retention]
        )
        return bool(moved)

    async def cursor(self, user_id: str) -> str | None:
        """The newest of the user's ``acked`` and ``seen`` cursors."""
        part = self._space.of_user(user_id)
        values = await self._redis.hmget(part.user_cursor(user_id), ["acked", "seen"])
        ids = [text(v) for v in values if v]
        if not ids:
            return None
        return max(ids, key=parse_event_id)

    async def renew(self, partitions: Iterable[int]) -> None:
        """Renew this instance's lease in ``partitions`` (those of its connected users)."""
        expiry = now_ms() + self._lease_ms
        wanted = set(partitions)
        self._leased |= wanted
        if not wanted:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for index in wanted:
                pipe.zadd(self._space.partitions[index].instances, {self._instance: expiry})
            await pipe.execute()

    async def withdraw(self) -> None:
        """Remove this instance's leases (it stops): its connections stop counting at once."""
        if not self._leased:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for index in self._leased:
                pipe.zrem(self._space.partitions[index].instances, self._instance)
            await pipe.execute()
        self._leased.clear()
