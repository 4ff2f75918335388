"""The notifier alone: ``uvicorn notifier.app:app`` (or ``python -m notifier``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.routing import Mount

from notifier.service import Notifier

notifier = Notifier()


@asynccontextmanager
async def _lifespan(_: Starlette) -> AsyncIterator[None]:
    async with notifier.lifespan():
        yield


app = notifier.asgi(
    Starlette(
        routes=[*notifier.routes(), Mount("/metrics", make_asgi_app())],
        lifespan=_lifespan,
    )
)
