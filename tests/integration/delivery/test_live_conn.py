"""The live channels' connection (``notifier.core.live_conn``) against real peers: a
``redis-server`` of its own with an ACL user (the pool's credentials are the
connection's), one on a Unix socket (redis-py's connection then carries it), and a TCP
peer that answers garbage. What a reader relies on: every message published arrives, in
order and byte for byte, several to a read when several are waiting; a lost or garbled
connection fails the read instead of hanging it."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from notifier.core.live_conn import (
    LiveConnection,
    OwnLiveConnection,
    RedisPyLiveConnection,
    open_live_connection,
)
from tests.support.env import free_port
from tests.support.processes import RedisServer

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "live-admin-" + secrets.token_hex(6)
USER_PASSWORD = "live-user-" + secrets.token_hex(6)
CHANNEL = "jobcast:{7}:live"


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server whose default user has a password, with a user ``live`` that may only
    use jobcast's channels (and PUBLISH, for the test)."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("live-acl"), ADMIN_PASSWORD)
    server.start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.execute_command(
            "ACL", "SETUSER", "live", "reset", "on", f">{USER_PASSWORD}",
            "resetchannels", "&jobcast:*", "+subscribe", "+unsubscribe", "+ping",
            "+publish", "+auth",
        )  # fmt: skip
        admin.close()
        yield server
    finally:
        server.stop()


def user_url(server: RedisServer, password: str = USER_PASSWORD) -> str:
    return f"redis://live:{password}@127.0.0.1:{server.port}/0"


@pytest.fixture
async def publisher(acl_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(user_url(acl_redis))
    yield client
    await client.aclose()


async def opened(url: str) -> tuple[aioredis.Redis, LiveConnection]:
    client = aioredis.Redis.from_url(url)
    return client, await open_live_connection(client.connection_pool, limit=1000)


async def read_messages(live: LiveConnection, count: int) -> tuple[list[bytes], list[int]]:
    """``count`` messages' data, and how many replies each read brought."""
    got: list[bytes] = []
    sizes: list[int] = []
    while len(got) < count:
        replies = await asyncio.wait_for(live.read(), 10)
        sizes.append(len(replies))
        got += [r[2] for r in replies if isinstance(r, list) and r[0] == b"message"]
    return got, sizes


async def subscribed(live: LiveConnection) -> None:
    await live.send("SUBSCRIBE", CHANNEL)
    (confirmation,) = await asyncio.wait_for(live.read(), 10)
    assert confirmation == [b"subscribe", CHANNEL.encode(), 1]


async def test_messages_arrive_in_order_byte_for_byte_several_to_a_read(
    acl_redis: RedisServer, publisher: aioredis.Redis
) -> None:
    client, live = await opened(user_url(acl_redis))
    try:
        assert isinstance(live, OwnLiveConnection)  # plain TCP: jobcast's own connection
        await subscribed(live)
        sent = [f"{n} é\n{'x' * (n % 700)}".encode() for n in range(500)]
        async with publisher.pipeline(transaction=False) as pipe:
            for data in sent:
                pipe.publish(CHANNEL, data)
            assert await pipe.execute() == [1] * len(sent)
        await asyncio.sleep(0.3)  # all of them waiting in the socket
        got, sizes = await read_messages(live, len(sent))
        assert got == sent
        assert max(sizes) > 1, sizes
        await live.send("PING")
        assert await asyncio.wait_for(live.read(), 10) == [[b"pong", b""]]
    finally:
        await live.close()
        await client.aclose()


async def test_a_password_without_a_user_name_authenticates(acl_redis: RedisServer) -> None:
    # redis://:<password>@...: the default user (requirepass); without AUTH the SUBSCRIBE
    # would be refused with NOAUTH.
    client, live = await opened(acl_redis.url)
    admin = aioredis.Redis.from_url(acl_redis.url)
    try:
        assert isinstance(live, OwnLiveConnection)
        await subscribed(live)
        assert await admin.publish(CHANNEL, b"for the default user") == 1
        got, _ = await read_messages(live, 1)
        assert got == [b"for the default user"]
    finally:
        await live.close()
        await admin.aclose()
        await client.aclose()


async def test_a_wrong_password_is_refused(acl_redis: RedisServer) -> None:
    client = aioredis.Redis.from_url(user_url(acl_redis, password="not-the-password"))
    try:
        with pytest.raises(redis.ResponseError, match="WRONGPASS"):
            await open_live_connection(client.connection_pool, limit=10)
    finally:
        await client.aclose()


async def test_a_connection_redis_drops_fails_the_read(
    acl_redis: RedisServer, publisher: aioredis.Redis
) -> None:
    client, live = await opened(user_url(acl_redis))
    admin = aioredis.Redis.from_url(acl_redis.url)
    try:
        await subscribed(live)
        pending = asyncio.create_task(live.read())
        await asyncio.sleep(0.1)
        assert await admin.client_kill_filter(_type="pubsub", user="live") == 1
        with pytest.raises(redis.ConnectionError):
            await asyncio.wait_for(pending, 10)
        assert not live.is_connected
        with pytest.raises(redis.ConnectionError):
            await live.send("PING")
    finally:
        await live.close()
        await admin.aclose()
        await client.aclose()


async def test_an_aborted_connection_fails_the_read(acl_redis: RedisServer) -> None:
    """What the reader's watchdog does to a connection silent for too long."""
    client, live = await opened(user_url(acl_redis))
    try:
        await subscribed(live)
        pending = asyncio.create_task(live.read())
        await asyncio.sleep(0.1)
        await live.abort()
        with pytest.raises(redis.ConnectionError):
            await asyncio.wait_for(pending, 10)
    finally:
        await live.close()
        await client.aclose()


async def test_garbage_from_the_peer_fails_the_read() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # the SUBSCRIBE
        writer.write(b"*3\r\n$9\r\nsubscribe\r\n&not resp\r\n")
        await writer.drain()
        await reader.read(1024)  # until the client goes
        writer.close()

    peer = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = peer.sockets[0].getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port)
    live = await open_live_connection(client.connection_pool, limit=10)
    try:
        await live.send("SUBSCRIBE", CHANNEL)
        with pytest.raises(redis.ConnectionError, match="unreadable"):
            await asyncio.wait_for(live.read(), 10)
    finally:
        await live.close()
        await client.aclose()
        peer.close()
        await peer.wait_closed()


@pytest.fixture(scope="module")
def unix_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("live-unix")
    path = workdir / "redis.sock"
    server = RedisServer(free_port(), workdir, extra=["--unixsocket", str(path)])
    server.start()
    try:
        yield path
    finally:
        server.stop()


async def test_a_unix_socket_goes_through_redis_py(unix_redis: Path) -> None:
    url = f"unix://{unix_redis}"
    client, live = await opened(url)
    publisher: Any = aioredis.Redis.from_url(url)
    try:
        assert isinstance(live, RedisPyLiveConnection)
        await subscribed(live)
        sent = [f"m{n}".encode() for n in range(50)]
        for data in sent:
            await publisher.publish(CHANNEL, data)
        got, _ = await read_messages(live, len(sent))
        assert got == sent
    finally:
        await live.close()
        await publisher.aclose()
        await client.aclose()
