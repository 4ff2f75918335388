"""The partition readers: each notifier reads only the partitions its connections need.

A partition is read while at least one of this instance's connections needs it (a user of
the partition is connected, a job of the partition is subscribed to, or an ``ops``
subscriber needs every ``job_error``); see :meth:`notifier.core.hub.Hub` for the counts.
A partition that starts being read begins at its stream's newest entry: what came before
is the new connection's replay (it waits for :meth:`PartitionReader.started` before
reading it, so nothing falls between the two).

On one Redis every partition is read by one blocking ``XREAD`` over all of them; adding a
partition interrupts the read in flight (the entries it may have carried are read again:
the last ids move only after a batch is handled). Redis Cluster refuses one ``XREAD``
over keys of two slots — even on one master — so on a cluster each partition has a
blocking read of its own (at most ``JOBCAST_PARTITIONS`` per instance, never one per
connection). On a Redis error a read backs off (capped, with jitter), logs it, and
resumes from the last id it handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from notifier.contract.events import StreamEvent
from notifier.contract.keys import Keyspace
from notifier.core.bus import AsyncRedis, stream_events, text

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[StreamEvent]], Awaitable[None]]


class _Read:
    """One blocking read loop over a set of partitions."""

    def __init__(self, owner: PartitionReader, name: str) -> None:
        self.owner = owner
        self.name = name
        self.partitions: set[int] = set()
        self.task: asyncio.Task[None] | None = None
        self.reading = False
        self.woken = False
        self.stopping = False

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=self.name)

    def wake(self) -> None:
        """Interrupt the blocking read in flight, if any (a partition was added)."""
        if self.reading and self.task is not None and not self.woken:
            self.woken = True
            self.task.cancel()

    def stop(self) -> None:
        self.stopping = True
        self.wake()

    async def run(self) -> None:
        owner = self.owner
        attempt = 0
        while not self.stopping:
            try:
                await owner.start_pending(self.partitions)
                streams = {
                    owner.space.partitions[i].events: owner.last_ids[i]
                    for i in self.partitions
                    if i in owner.last_ids
                }
                if not streams:
                    await owner.idle()
                    attempt = 0
                    continue
                self.reading = True
                try:
                    response = await owner.xread(streams)
                except asyncio.CancelledError:
                    if not self.woken:
                        raise
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    continue
                finally:
                    self.reading = False
                    self.woken = False
                owner.read_ok()
                attempt = 0
                await owner.handle(response)
            except asyncio.CancelledError:
                raise
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                owner.connected = False
                attempt += 1
                delay = min(owner.max_backoff, 0.1 * 2**attempt) * (0.5 + random.random() / 2)
                log.warning(
                    "event reader lost Redis; retrying",
                    extra={"error": str(exc), "retry_in_s": round(delay, 2), "attempt": attempt},
                )
                await asyncio.sleep(delay)
            except redis.RedisError as exc:  # a cluster in the middle of a failover
                owner.connected = False
                attempt += 1
                log.warning("event reader: Redis error; retrying", extra={"error": str(exc)})
                await asyncio.sleep(min(owner.max_backoff, 0.1 * 2**attempt))


class PartitionReader:
    """Reads the partitions added with :meth:`add` and hands each batch to ``handler``."""

    def __init__(
        self,
        client: AsyncRedis,
        handler: Handler,
        space: Keyspace,
        *,
        cluster: bool,
        batch: int = 500,
        block_ms: int = 1000,
        max_backoff: float = 5.0,
    ) -> None:
        self.client = client
        self.handler = handler
        self.space = space
        self.cluster = cluster
        self.batch = batch
        self.block_ms = block_ms
        self.max_backoff = max_backoff
        #: The partitions being read, each with the last id handled.
        self.last_ids: dict[int, str] = {}
        #: Partitions added whose starting id is not fetched yet.
        self._pending: dict[int, asyncio.Event] = {}
        self._reads: dict[int, _Read] = {}  # by partition (one shared _Read on one Redis)
        self._shared: _Read | None = None
        self._names = {p.events: p.index for p in space.partitions}
        self._idle = asyncio.Event()
        self.connected = False
        self._last_ok = 0.0
        self._running = False

    # --- which partitions

    @property
    def partitions(self) -> int:
        """How many partitions this instance reads (or is about to)."""
        return len(self._reads)

    def add(self, index: int) -> None:
        """Start reading partition ``index`` (from its newest entry)."""
        if index in self._reads:
            return
        self._pending[index] = asyncio.Event()
        if self.cluster:
            read = _Read(self, f"jobcast-reader-p{index}")
            read.partitions.add(index)
            self._reads[index] = read
            if self._running:
                read.start()
            return
        shared = self._shared_read()
        shared.partitions.add(index)
        self._reads[index] = shared
        self._idle.set()
        shared.wake()

    def discard(self, index: int) -> None:
        """Stop reading partition ``index``."""
        read = self._reads.pop(index, None)
        if read is None:
            return
        self.last_ids.pop(index, None)
        started = self._pending.pop(index, None)
        if started is not None:
            started.set()
        read.partitions.discard(index)
        if self.cluster:
            read.stop()

    async def started(self, index: int) -> None:
        """Wait until partition ``index`` is read from a known id (at most 5 s: while Redis
        is away, the replay that follows fails too)."""
        started = self._pending.get(index)
        if started is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(started.wait(), 5.0)

    def last_id(self, index: int) -> str | None:
        return self.last_ids.get(index)

    # --- health

    @property
    def healthy(self) -> bool:
        """Connected, and a read returned recently (the loops are alive)."""
        return self.connected and time.monotonic() - self._last_ok < self.block_ms / 1000 + 5

    async def lag(self, cap: int = 1000) -> int:
        """How many entries the read partitions hold after their last ids (each at most
        ``cap``)."""
        if not self.last_ids:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            for index, last in self.last_ids.items():
                pipe.xrange(self.space.partitions[index].events, min=f"({last}", count=cap)
            replies = await pipe.execute()
        return sum(len(reply or ()) for reply in replies)

    # --- the loops' shared steps

    def _shared_read(self) -> _Read:
        if self._shared is None:
            self._shared = _Read(self, "jobcast-event-reader")
            if self._running:
                self._shared.start()
        return self._shared

    async def run(self) -> None:
        """Run the read loops until cancelled."""
        self._running = True
        loops = list({id(r): r for r in self._reads.values()}.values())
        if not self.cluster:
            loops = [self._shared_read()]
        for read in loops:
            if read.task is None:
                read.start()
        try:
            while True:  # the health of an instance that reads nothing
                await asyncio.sleep(self.block_ms / 1000)
                if not self._reads:
                    try:
                        await self.client.ping()
                        self.read_ok()
                    except (redis.RedisError, OSError):
                        self.connected = False
        finally:
            self._running = False
            tasks = [r.task for r in {id(r): r for r in self._reads.values()}.values() if r.task]
            if self._shared is not None and self._shared.task is not None:
                tasks.append(self._shared.task)
            for task in set(tasks):
                task.cancel()
            for task in set(tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def xread(self, streams: dict[str, str]) -> object:
        """One blocking read. On a cluster (one partition a read), straight to the master
        holding its slot: redis-py would otherwise ask a node which keys the ``XREAD``
        holds (``COMMAND GETKEYS``) before every read."""
        client = self.client
        if not isinstance(client, AsyncRedisCluster):
            return await client.xread(streams, count=self.batch, block=self.block_ms)  # type: ignore[arg-type]
        [(key, last)] = streams.items()
        await client.initialize()  # after a failover: the new slot map
        node = client.get_node_from_key(key)
        return await client.execute_command(
            "XREAD",
            "COUNT",
            self.batch,
            "BLOCK",
            self.block_ms,
            "STREAMS",
            key,
            last,
            target_nodes=node,
        )

    async def start_pending(self, partitions: set[int]) -> None:
        """Fetch the newest id of each of ``partitions`` added since the last read."""
        pending = [i for i in partitions if i in self._pending]
        if not pending:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for index in pending:
                pipe.xrevrange(self.space.partitions[index].events, count=1)
            newest = await pipe.execute()
        for index, reply in zip(pending, newest, strict=True):
            started = self._pending.pop(index, None)
            if started is None:  # discarded meanwhile
                continue
            self.last_ids[index] = text(reply[0][0]) if reply else "0-0"
            started.set()
            log.info(
                "partition reader started",
                extra={"partition": index, "last_id": self.last_ids[index]},
            )
        self.read_ok()

    async def idle(self) -> None:
        """Nothing to read: wait for a partition to be added (or a while)."""
        self._idle.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.block_ms / 1000)

    def read_ok(self) -> None:
        if not self.connected:
            log.info("event reader connected", extra={"partitions": len(self.last_ids)})
        self.connected = True
        self._last_ok = time.monotonic()

    async def handle(self, response: object) -> None:
        for stream_reply in response or ():  # type: ignore[attr-defined]
            index = self._names.get(text(stream_reply[0]))
            if index is None or index not in self.last_ids:
                continue  # discarded while the read was in flight
            batch = stream_events(stream_reply[1], index)
            if not batch:
                continue
            self.last_ids[index] = batch[-1].event_id
            try:
                await self.handler(batch)
            except Exception:
                log.exception(
                    "event handler failed",
                    extra={"partition": index, "last_id": self.last_ids[index]},
                )
