"""notifier.transport.inline: a coroutine runs in the caller until it has to wait, then
in a task."""

from __future__ import annotations

import asyncio

import pytest

from notifier.transport import inline as eager


async def test_a_coroutine_that_never_waits_finishes_in_the_call() -> None:
    done: list[str] = []

    async def write() -> None:
        done.append("written")

    assert eager.start(write()) is None
    assert done == ["written"]


async def test_a_coroutine_that_waits_goes_on_in_a_task_with_its_state() -> None:
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def write() -> None:
        steps.append("before")
        steps.append(await gate)
        await asyncio.sleep(0)
        steps.append("after")

    task = eager.start(write())
    assert task is not None and steps == ["before"]
    gate.set_result("gate opened")
    await asyncio.wait_for(task, 1)
    assert steps == ["before", "gate opened", "after"]


async def test_an_error_before_waiting_is_raised_to_the_caller() -> None:
    async def write() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        eager.start(write())


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    cleaned: list[bool] = []

    async def write() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(True)

    task = eager.start(write())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]
