"""The notifier: settings, Redis, hub, protocol, Socket.IO and the stream reader, wired once.

Both ASGI entry points (``notifier.app:app`` alone, ``api.app:app`` composed with the REST
API) build one :class:`Notifier` and mount its routes and lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
import socketio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from notifier import metrics, native
from notifier.auth import TokenVerifier
from notifier.bus import StreamReader, async_client
from notifier.events import StreamEvent
from notifier.hub import Hub
from notifier.origins import OriginPolicy
from notifier.protocol import Protocol
from notifier.settings import Settings, get_settings
from notifier.sio import SOCKETIO_PATH, create_server

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.verifier = TokenVerifier(self.settings)  # fails now, naming a missing key
        self.origins = OriginPolicy(self.settings.cors_origins)
        self.hub = Hub()
        self.sio = create_server(self)
        self._redis: aioredis.Redis | None = None
        self._protocol: Protocol | None = None
        self.reader: StreamReader | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._delivered_seen = 0
        for transport in ("websocket", "polling", "native"):
            metrics.CONNECTIONS.labels(transport).set_function(
                lambda t=transport: self.count_connections(t)
            )

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the notifier is not started (lifespan not entered)")
        return self._redis

    @property
    def protocol(self) -> Protocol:
        if self._protocol is None:
            raise RuntimeError("the notifier is not started (lifespan not entered)")
        return self._protocol

    def count_connections(self, transport: str) -> int:
        sio_transport = self.sio.transport
        count = 0
        for conn in self.hub.connections.values():
            current = conn.transport if conn.transport == "native" else sio_transport(conn.id)
            count += current == transport
        return count

    def auth_refused(self, reason: str, transport: str) -> None:
        metrics.AUTH_FAILURES.labels(reason, transport).inc()
        log.info("connection refused", extra={"reason": reason, "transport": transport})

    async def _on_events(self, batch: Sequence[StreamEvent]) -> None:
        metrics.EVENTS_CONSUMED.inc(len(batch))
        await self.hub.dispatch(batch)
        delivered = self.hub.delivered
        metrics.EVENTS_DELIVERED.inc(delivered - self._delivered_seen)
        self._delivered_seen = delivered
        now = time.time() * 1000
        metrics.DELIVERY_DELAY.observe(max(0.0, now - batch[-1].key[0]) / 1000)

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self._redis = async_client(self.settings)
        self._protocol = Protocol(self.hub, self._redis, self.settings)
        self.reader = StreamReader(self._redis, self._on_events, batch=self.settings.read_batch)
        self._reader_task = asyncio.create_task(self.reader.run(), name="jobcast-event-reader")
        log.info("notifier started")
        try:
            yield
        finally:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
            await self._redis.aclose()
            log.info("notifier stopped")

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {}
        try:
            checks["redis"] = bool(await asyncio.wait_for(self.redis.ping(), timeout=2))
        except Exception as exc:
            checks["redis"] = False
            checks["redisError"] = type(exc).__name__
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
            WebSocketRoute(native.NATIVE_PATH, native_ws),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]

    def asgi(self, other_app: Any) -> socketio.ASGIApp:
        """Socket.IO at ``/ws/job-status``; everything else goes to ``other_app``."""
        return socketio.ASGIApp(self.sio, other_asgi_app=other_app, socketio_path=SOCKETIO_PATH)
