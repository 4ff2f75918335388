"""The notifier alone: ``uvicorn notifier.app:app`` (or ``python -m notifier``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from notifier.core.service import Notifier
from notifier.observability.metrics import metrics_route

notifier = Notifier()


@asynccontextmanager
async def _lifespan(_: Starlette) -> AsyncIterator[None]:
    async with notifier.lifespan():
        yield


app = notifier.asgi(
    Starlette(
        routes=[*notifier.routes(), metrics_route()],
        lifespan=_lifespan,
    )
)
