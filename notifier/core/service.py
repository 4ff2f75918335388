"""The notifier: settings, Redis, hub, client commands, Socket.IO and the stream reader, wired once.

Both ASGI entry points (``notifier.app:app`` alone, ``api.app:app`` composed with the REST
API) build one :class:`Notifier` and mount its routes and lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from notifier.adapters import native
from notifier.adapters.sio import create_server
from notifier.contract.endpoints import NATIVE_PATH
from notifier.contract.events import StreamEvent, dumps
from notifier.contract.keys import keyspace
from notifier.contract.settings import Settings, get_settings
from notifier.core import stats
from notifier.core.bus import AsyncRedis, async_client, feeds_since, verify_partitions
from notifier.core.hub import Connection, Hub
from notifier.core.presence import Presence
from notifier.core.reader import PartitionReader
from notifier.core.reaper import Reaper
from notifier.core.recovery import Recovery, Replay
from notifier.core.sessions import Sessions
from notifier.edge.auth import AuthError, Gate, Peer, Principal, TokenVerifier
from notifier.edge.commands import Commands, welcome
from notifier.edge.limits import RateLimiter
from notifier.edge.origins import OriginPolicy
from notifier.observability import metrics
from notifier.transport.frames import EncodeCache

log = logging.getLogger(__name__)

#: A full garbage collection once the connections closed since the last one reach this
#: share of those open (see :meth:`Notifier.collect_closed`).
COLLECT_CLOSED_SHARE = 0.1


class Notifier:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.verifier = TokenVerifier(self.settings)  # fails now, naming a missing key
        self.gate = Gate(self.verifier, self.settings)
        self.origins = OriginPolicy(self.settings.cors_origins)
        self.space = keyspace(self.settings.partitions)
        self.hub = Hub(self.space)
        self.sessions = Sessions(self.settings.session_warning_seconds)
        #: Native frames, encoded once per event for every native recipient.
        self.native_frames = EncodeCache(dumps)
        self.socket_server = create_server(self)
        metrics.TRANSPORT.info({"path": self.socket_server.path})
        self.instance_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._redis: AsyncRedis | None = None
        self._commands: Commands | None = None
        self._presence: Presence | None = None
        self._recovery: Recovery | None = None
        self.reader: PartitionReader | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._delivered_seen = 0
        self._closed_uncollected = 0  # connections released since the last full collection
        self._scrape_lock = asyncio.Lock()
        for transport in stats.TRANSPORTS:
            metrics.CONNECTIONS.labels(transport).set_function(
                functools.partial(self.count_connections, transport)
            )

    @property
    def redis(self) -> AsyncRedis:
        if self._redis is None:
            raise RuntimeError("the notifier is not started (lifespan not entered)")
        return self._redis

    @property
    def commands(self) -> Commands:
        if self._commands is None:
            raise RuntimeError("the notifier is not started (lifespan not entered)")
        return self._commands

    @property
    def presence(self) -> Presence:
        if self._presence is None:
            raise RuntimeError("the notifier is not started (lifespan not entered)")
        return self._presence

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            raise RuntimeError("the notifier is not started (lifespan not entered)")
        return self._recovery

    # --- connection life cycle, shared by the Socket.IO and native adapters

    def rate_limiter(self) -> RateLimiter:
        settings = self.settings
        return RateLimiter(
            settings.rate_limit_per_second, settings.rate_limit_burst, settings.flood_close_seconds
        )

    async def authenticate(
        self, token: str | None, conn_id: str, peer: Peer, transport: str
    ) -> Principal:
        """The token's user, holding a connection slot (cluster-wide), or ``AuthError``
        (counted, logged with the client's address)."""
        try:
            principal = self.gate.verify(token, peer)
            await self.admit(principal, conn_id)
        except AuthError as exc:
            self.auth_refused(exc.code, transport, peer)
            raise
        # A missing or wrong hint is served all the same, only perhaps by a notifier that
        # must read one more partition: the metric tells the operator.
        metrics.ROUTING_HINTS.labels(peer.hint_verdict(principal)).inc()
        return principal

    async def admit(self, principal: Principal, conn_id: str) -> None:
        """Take a connection slot for the user, cluster-wide, or refuse the connection."""
        limit = self.settings.max_connections_per_user
        try:
            admitted = await self.presence.open(principal.user_id, conn_id, limit)
        except Exception as exc:  # Redis away: do not lock users out; the lease comes later
            log.warning("connection limit not checked", extra={"error": str(exc)})
            return
        if not admitted:
            raise AuthError(
                "too_many_connections", f"Too many connections: at most {limit} per user"
            )

    async def establish(self, conn: Connection, last_event_id: str | None) -> bool:
        """Register ``conn``, greet it, and send what it is owed before any live event:
        the replay after ``last_event_id``, or the events that arrived while the user was
        offline. Returns ``recovered``."""
        self.hub.add(conn, hold=True)
        replay = Replay(recovered=False)
        try:
            await self.partition_started(conn.partition)  # live reads start before the replay
            if last_event_id:
                replay = await self.recovery.after(conn.user_id, last_event_id)
            if not replay.recovered and not await self.presence.others_online(
                conn.user_id, conn.id
            ):
                since = await self.presence.cursor(conn.user_id)
                replay = Replay(False, await self.recovery.offline(conn.user_id, since))
        except Exception:
            log.exception("replay failed", extra={"conn": conn.id})
        conn.send(welcome(conn.principal, recovered=replay.recovered))
        self.hub.resume(conn, replay.events)
        self.sessions.watch(conn)
        log.info(
            "connected",
            extra={
                "conn": conn.id,
                "user": conn.user_id,
                "transport": conn.transport,
                "client": conn.address,
                "recovered": replay.recovered,
                "replayed": len(replay.events),
            },
        )
        return replay.recovered

    async def release(self, conn: Connection) -> None:
        """Forget ``conn``; remember how far its user had been served live."""
        last = self.reader.last_id(conn.partition) if self.reader else None
        self.hub.remove(conn)
        self.sessions.forget(conn)
        self._closed_uncollected += 1
        try:
            await self.presence.close(conn.user_id, conn.id)
            if last and last != "0-0" and not conn.lost and not self.hub.by_user.get(conn.user_id):
                await self.presence.advance(conn.user_id, "seen", last)
        except Exception as exc:
            log.warning("presence not updated", extra={"conn": conn.id, "error": str(exc)})

    async def partition_started(self, partition: int) -> None:
        if self.reader is not None:
            await self.reader.started(partition)

    def _on_partition(self, partition: int, needed: bool) -> None:
        if self.reader is None:
            return
        if needed:
            self.reader.add(partition)
        else:
            self.reader.discard(partition)

    def count_connections(self, transport: str) -> int:
        # Connection.transport is kept current by the adapters (an upgrade to WebSocket).
        return sum(c.transport == transport for c in self.hub.connections.values())

    def auth_refused(self, reason: str, transport: str, peer: Peer) -> None:
        metrics.AUTH_FAILURES.labels(reason, transport).inc()
        log.info(
            "connection refused",
            extra={"reason": reason, "transport": transport, "client": peer.address},
        )

    async def _on_events(self, batch: Sequence[StreamEvent]) -> None:
        metrics.EVENTS_CONSUMED.value += len(batch)
        self.hub.dispatch(batch)
        delivered = self.hub.delivered
        metrics.EVENTS_DELIVERED.value += delivered - self._delivered_seen
        self._delivered_seen = delivered
        now = time.time() * 1000
        metrics.DELIVERY_DELAY.observe(max(0.0, now - batch[-1].key[0]) / 1000)

    def figures(self) -> dict[str, int]:
        """This instance's share of the cluster statistics (one pass over its connections)."""
        figures = dict.fromkeys(
            ("activeConnections", "activeJobSubscriptions", "activeChannelSubscriptions"), 0
        )
        by_transport = dict.fromkeys(stats.TRANSPORTS, 0)
        for conn in self.hub.connections.values():
            figures["activeConnections"] += 1
            figures["activeJobSubscriptions"] += len(conn.jobs)
            figures["activeChannelSubscriptions"] += len(conn.channels)
            by_transport[conn.transport] = by_transport.get(conn.transport, 0) + 1
        figures["eventsDelivered"] = self.hub.delivered
        for transport, count in by_transport.items():
            figures[f"transport:{transport}"] = count
        return figures

    async def _publish_instance(self, users: frozenset[str] | None) -> None:
        await stats.publish_instance(
            self.redis,
            self.instance_id,
            self.figures(),
            set(users) if users is not None else None,
            ttl_seconds=self.settings.presence_lease_seconds,
        )

    def collect_closed(self) -> int | None:
        """Free what closed connections left in reference cycles: a full collection once
        the connections closed since the last one reach :data:`COLLECT_CLOSED_SHARE` of
        those open (None: not yet; else what the collector found unreachable).

        Every closed connection leaves cycles (uvicorn's protocol and its transport,
        websockets' parser generator, python-engineio's session, the adapter's closures),
        and its objects had long reached the oldest generation while it was open; with the
        thresholds of :func:`_tune_gc` CPython's own full collections hardly ever run, so
        each wave of reconnects stayed in memory (the soak: ≈ 8 KiB per reconnect). The
        cost of a collection grows with the connections open and so does the number of
        closes between two: per closed connection it stays about the same."""
        closed = self._closed_uncollected
        if not closed or closed < len(self.hub.connections) * COLLECT_CLOSED_SHARE:
            return None
        self._closed_uncollected = 0
        started = time.perf_counter()
        found = gc.collect()
        trimmed = release_free_memory()
        log.debug(
            "collected after closed connections",
            extra={
                "closed": closed,
                "unreachable": found,
                "trimmed": trimmed,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return found

    async def _housekeeping(self) -> None:
        """Once a second: free what closed connections left (:meth:`collect_closed`);
        renew this instance's lease (which keeps its connections counted) and publish its
        statistics (``jobcast_redis_up`` follows whether this round trip succeeded). The
        figures only ``/metrics`` shows are read when it is scraped
        (:meth:`_read_scraped_figures`)."""
        published_users: frozenset[str] | None = None
        while True:
            await asyncio.sleep(1.0)
            self.collect_closed()
            try:
                await self.presence.renew(self.hub.by_partition)
                users = frozenset(self.hub.by_user)
                await self._publish_instance(users if users != published_users else None)
                published_users = users
                metrics.REDIS_UP.set(1)
            except Exception as exc:
                published_users = None
                metrics.REDIS_UP.set(0)
                log.warning("instance lease not published", extra={"error": str(exc)})

    async def _read_scraped_figures(self) -> None:
        """For a scrape of ``/metrics``: the reader's lag and the cluster-wide job figures
        kept in Redis, running jobs (the leases) and the job event totals
        (``metrics.JobTotals``). Read once a second, these were 200 pipelined commands a
        second, about 5 % of a notifier's CPU at 1,000 events/s. Scrapes that come together
        read one after the other: the totals must be read in order (one read older than
        the last would look like a partition's totals lost, and be counted again)."""
        async with self._scrape_lock:
            if self.reader is not None:
                metrics.READER_LAG.set(await self.reader.lag())
            await self._read_job_figures()

    async def _read_job_figures(self) -> None:
        parts = self.space.partitions
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in parts:
                pipe.zcard(part.running)
                pipe.hgetall(part.job_totals)
            replies = await pipe.execute()
        metrics.JOBS_RUNNING.set(sum(int(count) for count in replies[0::2]))
        metrics.JOB_TOTALS.update(replies[1::2])

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        settings = self.settings
        self._redis = async_client(settings)
        await verify_partitions(self._redis, settings)  # refuses another partition count
        self._presence = Presence(
            self._redis,
            self.space,
            self.instance_id,
            retention=settings.retention_seconds,
            lease_seconds=settings.presence_lease_seconds,
        )
        self._recovery = Recovery(
            self._redis,
            self.space,
            retention_seconds=settings.retention_seconds,
            inbox_max=settings.inbox_max_events,
            feeds_since_ms=await feeds_since(self._redis),
        )
        self._commands = Commands(
            self.hub,
            self._redis,
            settings,
            self._presence,
            self.verifier,
            self.sessions,
            self.partition_started,
        )
        self.reader = PartitionReader(
            self._redis,
            self._on_events,
            self.space,
            cluster=settings.redis_cluster,
            batch=settings.read_batch,
        )
        self.hub.on_partition = self._on_partition
        metrics.READER_PARTITIONS.set_function(lambda: self.reader.partitions if self.reader else 0)
        metrics.SCRAPE_REFRESH.append(self._read_scraped_figures)
        self._tasks = [
            asyncio.create_task(self.reader.run(), name="jobcast-event-reader"),
            asyncio.create_task(self._housekeeping(), name="jobcast-housekeeping"),
            asyncio.create_task(
                Reaper(self._redis, settings, self.instance_id).run(), name="jobcast-reaper"
            ),
        ]
        _tune_gc(settings.gc_threshold)
        with contextlib.suppress(Exception):  # before any connection: its lease must exist
            await self._publish_instance(frozenset())
        log.info(
            "notifier started transport=%s",
            self.socket_server.path,
            extra={"instance": self.instance_id, "transport_path": self.socket_server.path},
        )
        try:
            yield
        finally:
            metrics.SCRAPE_REFRESH.remove(self._read_scraped_figures)
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):
                await stats.withdraw_instance(self._redis, self.instance_id)
                await self._presence.withdraw()
            await self._redis.aclose()
            log.info("notifier stopped", extra={"instance": self.instance_id})

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {}
        try:
            checks["redis"] = bool(await asyncio.wait_for(self.redis.ping(), timeout=2))
        except Exception as exc:
            checks["redis"] = False
            checks["redisError"] = type(exc).__name__
        metrics.REDIS_UP.set(1 if checks["redis"] else 0)
        checks["eventReader"] = self.reader is not None and self.reader.healthy
        return all(v for k, v in checks.items() if k in ("redis", "eventReader")), checks

    # --- HTTP and WebSocket routes the notifier owns

    def routes(self) -> list[BaseRoute]:
        async def native_ws(ws: WebSocket) -> None:
            await native.endpoint(ws, self)

        async def healthz(_: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def readyz(_: Request) -> Response:
            ready, checks = await self.readiness()
            return JSONResponse(
                {"status": "ready" if ready else "not ready", "checks": checks},
                status_code=200 if ready else 503,
            )

        return [
            WebSocketRoute(NATIVE_PATH, native_ws),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]

    def asgi(self, other_app: Any) -> Any:
        """Socket.IO at ``/ws/job-status``; everything else goes to ``other_app``."""
        return self.socket_server.asgi(other_app)


def _malloc_trim() -> Any:
    try:  # glibc's; musl and others have none
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``): what a
    wave of closed connections and large replies freed stays in the process's RSS
    otherwise, below the heap's top, as the high-water mark of its busiest moment (the
    soak: a 4 MiB step that never went down). True when the heap gave any back."""
    return bool(_MALLOC_TRIM(0)) if _MALLOC_TRIM is not None else False


def _tune_gc(threshold: int) -> None:
    """Collect the young generation less often and keep start-up objects out of every scan:
    with thousands of connections, CPython's default (700 allocations) triggers collections
    on most deliveries (profiled in the benchmark). ``threshold`` 0 keeps the defaults."""
    if threshold > 0:
        gc.freeze()
        gc.set_threshold(threshold, 20, 100)
