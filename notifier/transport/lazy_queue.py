"""A queue and an event for thousands of idle connections.

Every WebSocket connection has two queues that are empty nearly all the time: uvicorn's
queue of received messages and python-engineio's queue of packets to send. An
``asyncio.Queue`` allocates four deques up front (items, getters, putters, its
``Event``'s waiters), about 2.3 KiB, so the two cost more per idle connection than all of
jobcast's own state. :class:`LazyQueue` is the part of ``asyncio.Queue`` that uvicorn and
python-engineio use (unbounded; ``put``/``put_nowait``, ``get``/``get_nowait``, ``empty``,
``qsize``, ``task_done``, ``join``), with the same semantics, holding nothing while empty.
:class:`LazyEvent` is the same for ``asyncio.Event`` (uvicorn's ``writable`` flag, set but
for the moments the transport is paused): its waiters' deque, ~0.7 KiB, only while one waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class LazyQueue(Generic[T]):
    __slots__ = ("_getters", "_items", "_joiners", "_unfinished")

    def __init__(self, maxsize: int = 0) -> None:
        if maxsize:
            raise ValueError("LazyQueue is unbounded")
        self._items: deque[T] | None = None  # only while something is queued
        self._getters: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self._joiners: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return False

    def put_nowait(self, item: T) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._unfinished += 1
        self._wake_one()

    async def put(self, item: T) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> T:
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None
        return item

    async def get(self) -> T:
        while not self._items:
            getter, self._getters = _new_waiter(self._getters)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if self._getters:
                    with contextlib.suppress(ValueError):
                        self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake_one()  # it was woken for an item it will not take
                raise
        return self.get_nowait()

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners:
            joiners, self._joiners = self._joiners, None
            for joiner in joiners:
                if not joiner.done():
                    joiner.set_result(None)

    async def join(self) -> None:
        if self._unfinished > 0:
            joiner = asyncio.get_running_loop().create_future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(joiner)
            await joiner

    def _wake_one(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break
        if not getters:
            self._getters = None

    def __repr__(self) -> str:
        return f"<LazyQueue size={self.qsize()} unfinished={self._unfinished}>"


class LazyEvent:
    """``asyncio.Event`` (``is_set``, ``set``, ``clear``, ``wait``), holding no waiter list
    while nobody waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            waiters, self._waiters = self._waiters, None
            for waiter in waiters or ():
                if not waiter.done():
                    waiter.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter, self._waiters = _new_waiter(self._waiters)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None

    def __repr__(self) -> str:
        return f"<LazyEvent {'set' if self._value else 'unset'}>"


def _new_waiter(
    waiters: list[asyncio.Future[Any]] | None,
) -> tuple[asyncio.Future[Any], list[asyncio.Future[Any]]]:
    """A future of the running loop, appended to ``waiters`` (made on the first waiter:
    an idle connection holds none)."""
    waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if waiters is None:
        waiters = []
    waiters.append(waiter)
    return waiter, waiters
