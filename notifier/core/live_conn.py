"""The live channels' connection of a partition reader (:mod:`notifier.core.reader`): one
RESP2 connection that only subscribes, pings and reads.

To a Redis over plain TCP (one Redis, Sentinel's master) it is a connection of jobcast's
own: redis-py's pool gives the address (Sentinel's: the master it names) and the
credentials, and hiredis — what redis-py itself uses — packs the commands and parses the
replies, every reply one read of the socket completed handed on at once.
redis-py's own connection reads one reply per call, through a chain of coroutines: about
4.5 µs a reply where hiredis alone takes 0.8, which was the largest share of a notifier's
CPU per event that was not delivery itself. Anything else (TLS, a Unix socket, a
credential provider) goes through redis-py's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any, Protocol

import hiredis
import redis
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection

#: How much one read of the socket takes (what it holds is parsed and handed on at once).
READ_SIZE = 65536


class LiveConnection(Protocol):
    @property
    def is_connected(self) -> bool: ...

    async def send(self, *command: str) -> None:
        """Write ``command`` (its answer, if any, comes through :meth:`read`)."""

    async def read(self) -> list[Any]:
        """Wait for the next reply, then return it with every reply already buffered behind
        it (bulk strings as bytes). Raises ``redis.ConnectionError`` once the connection
        is lost, ``redis.ResponseError`` for an error reply."""

    async def abort(self) -> None:
        """Cut the connection now: a read in flight fails."""

    async def close(self) -> None: ...


class OwnLiveConnection:
    """A plain TCP connection: commands packed by ``hiredis.pack_command``, replies parsed
    by ``hiredis.Reader``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()  # bulk strings stay bytes
        self._open = True

    @property
    def is_connected(self) -> bool:
        return self._open and not self._writer.is_closing()

    async def send(self, *command: str) -> None:
        if not self.is_connected:
            raise redis.ConnectionError("the live channels' connection is closed")
        # A few hundred bytes at most (a SUBSCRIBE of every partition): the transport's
        # buffer takes it at once, nothing to wait for.
        # RESP, packed as redis-py packs it (hiredis' stub types the argument as a
        # one-element tuple; it takes any number).
        self._writer.write(hiredis.pack_command(command))  # type: ignore[arg-type]

    async def read(self) -> list[Any]:
        parser = self._parser
        replies: list[Any] = []
        while True:
            try:
                reply = parser.gets()
            except hiredis.ProtocolError as exc:
                raise redis.ConnectionError(f"unreadable live channels' reply: {exc}") from exc
            if reply is False:  # no complete reply left in what was read
                if replies:
                    return replies
                data = await self._reader.read(READ_SIZE)
                if not data:
                    self._open = False
                    raise redis.ConnectionError("Redis closed the live channels' connection")
                parser.feed(data)
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise redis.ResponseError(str(reply))
            replies.append(reply)

    async def abort(self) -> None:
        self._open = False
        self._writer.transport.abort()

    async def close(self) -> None:
        self._open = False
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)


class RedisPyLiveConnection:
    """The same through redis-py's connection (TLS, a Unix socket, a credential provider):
    one reply per call, as many as are buffered (at most ``limit``)."""

    def __init__(self, conn: AbstractConnection, limit: int) -> None:
        self._conn = conn
        self._limit = limit

    @property
    def is_connected(self) -> bool:
        return bool(self._conn.is_connected)

    async def send(self, *command: str) -> None:
        if not self._conn.is_connected:
            # redis-py would open it again, without its subscriptions
            raise redis.ConnectionError("the live channels' connection is closed")
        await self._conn.send_command(*command, check_health=False)

    async def read(self) -> list[Any]:
        conn = self._conn
        replies = [await conn.read_response(disable_decoding=True, timeout=math.inf)]
        while len(replies) < self._limit and await conn.can_read():
            replies.append(await conn.read_response(disable_decoding=True, timeout=math.inf))
        return replies

    async def abort(self) -> None:
        await self._conn.disconnect(nowait=True)

    async def close(self) -> None:
        await self._conn.disconnect()


async def open_live_connection(pool: Any, limit: int) -> LiveConnection:
    """A live channels' connection to the Redis of ``pool`` (a redis-py asyncio pool),
    authenticated as its connections are; ``limit``: the most replies a read hands on
    through redis-py's connection."""
    kwargs: dict[str, Any] = pool.connection_kwargs
    own = pool.connection_class in (Connection, SentinelManagedConnection) and not kwargs.get(
        "credential_provider"
    )
    if not own:
        # RESP2: the channels' messages are plain replies (under RESP3 they are pushes,
        # which redis-py hands through its push handlers). No health checks: the reader's
        # watchdog PINGs this connection, and redis-py's check reads the loop's clock after
        # every reply (under Python 3.11 a getpid() system call).
        conn = pool.connection_class(**{**kwargs, "protocol": 2, "health_check_interval": 0})
        await conn.connect()
        return RedisPyLiveConnection(conn, limit)
    if isinstance(pool, SentinelConnectionPool):
        host, port = await pool.get_master_address()  # type: ignore[no-untyped-call]
    else:
        host, port = kwargs.get("host", "localhost"), int(kwargs.get("port", 6379))
    timeout = kwargs.get("socket_connect_timeout") or 5.0
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError as exc:
        raise redis.TimeoutError(f"connecting to {host}:{port} for the live channels") from exc
    live = OwnLiveConnection(reader, writer)
    password, username = kwargs.get("password"), kwargs.get("username")
    if password:
        try:
            auth = ("AUTH", username, password) if username else ("AUTH", password)
            await live.send(*auth)
            await asyncio.wait_for(live.read(), timeout)
        except BaseException:
            await live.close()
            raise
    return live
