"""An in-process uvicorn serving an ASGI app of the product, as ``python -m api`` would."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from tests.support.env import free_port
from tests.support.helpers import TIMEOUT
from tests.support.waiting import wait_until_async


@contextlib.asynccontextmanager
async def serving(app: Any, settings: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free port with the WebSocket protocol ``python -m api`` picks for
    ``settings`` (jobcast's on the fast path, uvicorn's own on the stock one); yields its
    base URL. The GC thresholds the notifier tunes are put back afterwards."""
    from notifier.transport.serve import websocket_protocol

    port = free_port()
    gc_threshold = gc.get_threshold()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
            ws=websocket_protocol(settings),
            ws_per_message_deflate=False,
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        assert await wait_until_async(lambda: server.started or task.done(), TIMEOUT)
        assert not task.done(), "the in-process server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, TIMEOUT)
        gc.set_threshold(*gc_threshold)
