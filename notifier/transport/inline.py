"""Run a coroutine at once, in the caller, up to its first suspension.

An ASGI server's ``send`` is a coroutine, yet it writes a WebSocket frame without waiting
unless the transport is paused (flow control). Running it here rather than in a task (or
behind a queue a task drains) saves a task per frame, the cost that dominates a fan-out to
thousands of connections. If the coroutine does suspend, the rest of it runs in a task,
which the caller gets back to order what follows behind it. (Python 3.12's eager task
factory does this for every task of a loop; this is the same for one call, on 3.11.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


def start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """None once ``coro`` has finished here; else the task that finishes it.

    An exception ``coro`` raises before suspending is raised here.
    """
    try:
        suspended = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_Rest(coro, suspended))


class _Rest:
    """The rest of a started coroutine: awaits what it suspended on, then resumes it."""

    __slots__ = ("_coro", "_suspended")

    def __init__(self, coro: Coroutine[Any, Any, None], suspended: Any) -> None:
        self._coro = coro
        self._suspended = suspended

    def __await__(self) -> Generator[Any, Any, None]:
        coro, suspended = self._coro, self._suspended
        try:
            while True:
                try:
                    value = yield suspended  # the task waits for the future the coroutine gave
                except BaseException as exc:  # cancelled while waiting: the coroutine decides
                    suspended = coro.throw(exc)
                else:
                    suspended = coro.send(value)
        except StopIteration:
            return
