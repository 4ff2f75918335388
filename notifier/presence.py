"""Who is connected, across every notifier instance, and what each user has already had.

Connections are leases in Redis (a sorted set per user, scored by expiry) that each
instance renews while the connection is open, so a dead instance's connections drop out
by themselves. The per-user cursor records the newest inbox event acknowledged (``ack``)
and the newest one delivered live before the user's last connection closed (``seen``);
offline delivery replays what came after both.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from notifier import keys
from notifier.bus import text
from notifier.events import parse_event_id

# KEYS: 1 user's connections; ARGV: 1 member, 2 now ms, 3 expiry ms, 4 max connections
_OPEN_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and
   redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return -1
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: 1 cursor hash; ARGV: 1 field, 2 event id, 3 ttl s. Keeps the larger id.
_CURSOR_LUA = """
local function parse(id)
  local ms, seq = string.match(id or '', '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local nms, nseq = parse(ARGV[2])
if not nms then return redis.error_reply('ERR bad event id') end
local cms, cseq = parse(redis.call('HGET', KEYS[1], ARGV[1]))
if cms and (cms > nms or (cms == nms and cseq >= nseq)) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


class Presence:
    def __init__(
        self, client: aioredis.Redis, instance: str, lease_seconds: float, retention: int
    ) -> None:
        self._redis = client
        self._instance = instance
        self._lease_ms = int(lease_seconds * 1000)
        self._retention = retention
        self._open = client.register_script(_OPEN_LUA)
        self._cursor = client.register_script(_CURSOR_LUA)

    def _member(self, conn_id: str) -> str:
        return f"{self._instance}:{conn_id}"

    async def open(self, user_id: str, conn_id: str, limit: int) -> bool:
        """Lease a connection slot for the user; False when they already have ``limit``."""
        now = _now_ms()
        count = await self._open(
            keys=[keys.user_connections(user_id)],
            args=[self._member(conn_id), now, now + self._lease_ms, limit],
        )
        return int(count) >= 0

    async def close(self, user_id: str, conn_id: str) -> None:
        await self._redis.zrem(keys.user_connections(user_id), self._member(conn_id))

    async def renew(self, leases: list[tuple[str, str]]) -> None:
        """Extend the leases of this instance's open connections ``(user_id, conn_id)``."""
        if not leases:
            return
        expiry = _now_ms() + self._lease_ms
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, conn_id in leases:
                pipe.zadd(keys.user_connections(user_id), {self._member(conn_id): expiry}, xx=True)
                pipe.pexpireat(keys.user_connections(user_id), expiry)
            await pipe.execute()

    async def others_online(self, user_id: str, conn_id: str) -> bool:
        """Whether the user has a live connection other than ``conn_id`` on any instance."""
        members = await self._redis.zrangebyscore(keys.user_connections(user_id), _now_ms(), "+inf")
        mine = self._member(conn_id)
        return any(member != mine for member in members)

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
