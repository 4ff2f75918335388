"""Builds the REST API, alone or composed with the notifier into one ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.errors import install_handlers
from api.routes import connections, demo, jobs
from notifier.contract.settings import Settings, get_settings
from notifier.core.bus import async_client, verify_partitions
from notifier.core.service import Notifier
from notifier.edge.auth import Gate, TokenVerifier
from notifier.edge.limits import UserRateLimits
from notifier.observability.metrics import metrics_route

DESCRIPTION = """Live progress of Celery jobs.

Socket.IO at path `/ws/job-status`, a plain WebSocket at `/ws/job-status-native`.
Every `/api/` call needs a JWT: `Authorization: Bearer <token>`."""


def create_rest_app(settings: Settings | None = None, notifier: Notifier | None = None) -> FastAPI:
    settings = settings or get_settings()
    gate = notifier.gate if notifier else Gate(TokenVerifier(settings), settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if notifier is not None:
                await stack.enter_async_context(notifier.lifespan())
                app.state.redis = notifier.redis
            else:
                app.state.redis = async_client(settings)
                stack.push_async_callback(app.state.redis.aclose)
                await verify_partitions(app.state.redis, settings)
            yield

    app = FastAPI(title="jobcast", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.verifier = gate.verifier
    app.state.gate = gate
    app.state.rate_limits = UserRateLimits(
        settings.rest_rate_limit_per_second, settings.rest_rate_limit_burst
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
    )
    install_handlers(app)
    app.include_router(jobs.router)
    app.include_router(connections.router)
    demo.install(app, settings)  # `/` (the demo page), /static, the demo token API
    if notifier is not None:
        app.router.routes.extend(notifier.routes())
    else:
        _add_health(app)
    app.router.routes.append(metrics_route())
    return app


def _add_health(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Any:
        from fastapi.responses import JSONResponse

        try:
            await app.state.redis.ping()
        except Exception as exc:
            return JSONResponse(
                {
                    "status": "not ready",
                    "checks": {"redis": False, "redisError": type(exc).__name__},
                },
                503,
            )
        return {"status": "ready", "checks": {"redis": True}}


def create_app(settings: Settings | None = None) -> Any:
    """The REST API and the notifier in one ASGI app (the default deployment)."""
    settings = settings or get_settings()
    notifier = Notifier(settings)
    return notifier.asgi(create_rest_app(settings, notifier))
