"""Who is connected, across every notifier instance, and what each user has already had.

Each user has a set of open connections (``instance|conn``). An entry counts only while
its instance's lease in ``keys.INSTANCES`` is live (every instance renews its own lease
once a second), so a dead instance's connections drop out by themselves, with no
per-connection renewal. The per-user cursor records the newest inbox event acknowledged
(``ack``) and the newest one delivered live before the user's last connection closed
(``seen``); offline delivery replays what came after both.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from notifier.contract import keys, scripts
from notifier.contract.events import now_ms, parse_event_id
from notifier.core.bus import text

_OPEN_LUA = scripts.source("presence_prune", "presence_open")
_LIVE_LUA = scripts.source("presence_prune", "presence_live")
_CURSOR_LUA = scripts.source("presence_cursor")


async def live_connections(client: aioredis.Redis, user_id: str, exclude: str = "") -> int:
    """The user's open connections on live instances (``exclude``: one ``instance|conn``)."""
    count = await client.register_script(_LIVE_LUA)(
        keys=[keys.user_connections(user_id), keys.INSTANCES], args=[now_ms(), exclude]
    )
    return int(count)


class Presence:
    def __init__(self, client: aioredis.Redis, instance: str, retention: int) -> None:
        self._redis = client
        self._instance = instance
        self._retention = retention
        self._open = client.register_script(_OPEN_LUA)
        self._cursor = client.register_script(_CURSOR_LUA)

    def _member(self, conn_id: str) -> str:
        return f"{self._instance}|{conn_id}"

    async def open(self, user_id: str, conn_id: str, limit: int) -> bool:
        """Take a connection slot for the user; False when they already have ``limit``."""
        count = await self._open(
            keys=[keys.user_connections(user_id), keys.INSTANCES],
            args=[now_ms(), self._member(conn_id), limit, self._retention],
        )
        return int(count) >= 0

    async def close(self, user_id: str, conn_id: str) -> None:
        await self._redis.srem(keys.user_connections(user_id), self._member(conn_id))

    async def others_online(self, user_id: str, conn_id: str) -> bool:
        """Whether the user has a live connection other than ``conn_id`` on any instance."""
        return await live_connections(self._redis, user_id, self._member(conn_id)) > 0

    async def advance(self, user_id: str, field: str, event_id: str) -> bool:
        """Move the user's ``acked`` or ``seen`` cursor forward to ``event_id``."""
        moved = await self._cursor(
            keys=[keys.user_cursor(user_id)], args=[field, event_id, self._retention]
        )
        return bool(moved)

    async def cursor(self, user_id: str) -> str | None:
        """The newest of the user's ``acked`` and ``seen`` cursors."""
        values = await self._redis.hmget(keys.user_cursor(user_id), ["acked", "seen"])
        ids = [text(v) for v in values if v]
        if not ids:
            return None
        return max(ids, key=parse_event_id)
