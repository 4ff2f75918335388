"""The bounded wait of the tests: poll ``check`` until it holds or ``within`` seconds pass.

One helper, in the two forms the tests need: :func:`wait_until` blocks (process start-ups,
threads, synchronous tests and fixtures), :func:`wait_until_async` sleeps on the event loop
(inside coroutines, where blocking would stop the very clients being waited for). Both
check once more at the deadline and return the last result, so a caller can assert on it
with a message of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def wait_until(check: Callable[[], bool], within: float, *, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


async def wait_until_async(
    check: Callable[[], bool], within: float, *, interval: float = 0.01
) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if check():
            return True
        await asyncio.sleep(interval)
    return check()
