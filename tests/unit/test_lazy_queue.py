"""notifier.transport.lazy_queue.LazyQueue behaves as asyncio.Queue does where uvicorn and
Engine.IO use it."""

from __future__ import annotations

import asyncio
import sys

import pytest

from notifier.transport.lazy_queue import LazyQueue


async def test_items_come_out_in_order_and_empty_raises() -> None:
    queue: LazyQueue[int] = LazyQueue()
    assert queue.empty() and queue.qsize() == 0
    for i in range(5):
        queue.put_nowait(i)
    await queue.put(5)
    assert queue.qsize() == 6 and not queue.empty()
    assert [queue.get_nowait() for _ in range(6)] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_get_waits_for_a_put_and_getters_are_served_in_turn() -> None:
    queue: LazyQueue[str] = LazyQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert await asyncio.wait_for(first, 1) == "a"
    assert await asyncio.wait_for(second, 1) == "b"


async def test_a_cancelled_getter_takes_nothing_and_passes_its_turn_on() -> None:
    queue: LazyQueue[str] = LazyQueue()
    cancelled = asyncio.ensure_future(queue.get())
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("x")  # wakes the first getter...
    cancelled.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(waiting, 1) == "x"
    assert cancelled.cancelled() and queue.empty()


async def test_a_timed_out_get_leaves_the_queue_usable() -> None:
    queue: LazyQueue[int] = LazyQueue()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await queue.get()
    queue.put_nowait(1)
    assert await asyncio.wait_for(queue.get(), 1) == 1


async def test_join_waits_until_every_item_is_done() -> None:
    queue: LazyQueue[int] = LazyQueue()
    await asyncio.wait_for(queue.join(), 1)  # nothing unfinished
    queue.put_nowait(1)
    queue.put_nowait(2)
    joined = asyncio.ensure_future(queue.join())
    queue.get_nowait()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError):
        queue.task_done()


def test_an_empty_queue_holds_less_than_asyncio_queue() -> None:
    lean: LazyQueue[int] = LazyQueue()
    lean.put_nowait(1)
    lean.get_nowait()  # used and emptied: back to holding nothing
    assert sys.getsizeof(lean) + sys.getsizeof(lean._items) < 200
    with pytest.raises(ValueError):
        LazyQueue(maxsize=10)
