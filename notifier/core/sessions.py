"""Token lifetime on live connections: warn before ``exp``, close at ``exp``.

A connection is told ``session_expiring`` ``JOBCAST_SESSION_WARNING_SECONDS`` before its
token expires (at once if less remains), then ``session_expired``, and is closed — unless
it sends ``refresh_token`` with a valid token for the same ``sub`` first.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import math
import time
from collections.abc import Callable

from notifier.contract.events import now_ms
from notifier.core.hub import Connection
from notifier.core.outbox import CLOSE_AUTH

SESSION_EXPIRED = "session_expired"

log = logging.getLogger(__name__)


class Deadlines:
    """Callbacks by key at wall-clock times, never early, at most ``resolution`` seconds
    late: due times are grouped in slots of ``resolution`` seconds and one loop timer waits
    for the earliest slot. A connection's pending callback is a dict entry (~0.1 KiB), not
    a loop timer (~0.7 KiB with its context and, under uvloop, its libuv handle), nor a
    task and its frame (several KiB while it waits for hours)."""

    def __init__(self, resolution: float = 0.25) -> None:
        self._resolution = resolution
        self._slots: dict[int, dict[str, Callable[[], None]]] = {}
        self._slot_of: dict[str, int] = {}
        self._heap: list[int] = []  # slot numbers; those emptied are skipped when due
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = -1

    def __len__(self) -> int:
        return len(self._slot_of)

    def call_at(self, key: str, when: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the wall clock passes ``when`` (replacing ``key``'s)."""
        self.cancel(key)
        slot = math.ceil(when / self._resolution)
        callbacks = self._slots.get(slot)
        if callbacks is None:
            callbacks = self._slots[slot] = {}
            heapq.heappush(self._heap, slot)
        callbacks[key] = callback
        self._slot_of[key] = slot
        self._arm()

    def cancel(self, key: str) -> None:
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return
        callbacks = self._slots.get(slot)
        if callbacks is not None:
            callbacks.pop(key, None)
            if not callbacks:
                del self._slots[slot]
        if len(self._heap) > 2 * len(self._slots) + 64:  # mostly slots emptied: compact
            self._heap = list(self._slots)
            heapq.heapify(self._heap)

    def _arm(self) -> None:
        heap = self._heap
        while heap and heap[0] not in self._slots:
            heapq.heappop(heap)
        if not heap:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        head = heap[0]
        if self._timer is not None:
            if self._timer_slot == head:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, head * self._resolution - time.time())
        self._timer = loop.call_at(loop.time() + delay, self._fire)
        self._timer_slot = head

    def _fire(self) -> None:
        self._timer = None
        now = time.time()
        heap = self._heap
        while heap and heap[0] * self._resolution <= now:
            callbacks = self._slots.pop(heapq.heappop(heap), None)
            for key, callback in (callbacks or {}).items():
                del self._slot_of[key]
                try:
                    callback()  # may call call_at for a later slot
                except Exception:
                    log.exception("deadline callback failed", extra={"key": key})
        self._arm()


class Sessions:
    """A due time per connection in one :class:`Deadlines` (no task nor loop timer of its
    own: those cost memory while they wait for hours)."""

    def __init__(self, warning_seconds: float) -> None:
        self._warning = warning_seconds
        self._deadlines = Deadlines()

    def __len__(self) -> int:
        """Connections whose token's clock runs."""
        return len(self._deadlines)

    def watch(self, conn: Connection) -> None:
        """(Re)start the clock of ``conn`` from its principal's ``exp``."""
        self.forget(conn)
        expires_at = conn.principal.expires_at
        if expires_at != float("inf"):
            self._schedule(conn, expires_at - self._warning, self._warn)

    def forget(self, conn: Connection) -> None:
        self._deadlines.cancel(conn.id)

    def _schedule(self, conn: Connection, at: float, step: Callable[[Connection], None]) -> None:
        # the token's clock is the wall clock
        self._deadlines.call_at(conn.id, at, functools.partial(step, conn))

    def _warn(self, conn: Connection) -> None:
        expires_at = conn.principal.expires_at
        conn.send(
            {
                "type": "session_expiring",
                "expiresAt": int(expires_at * 1000),
                "timestamp": now_ms(),
                "message": "Your session expires soon: send refresh_token with a new token",
            }
        )
        self._schedule(conn, expires_at, self._expire)

    def _expire(self, conn: Connection) -> None:
        conn.send(
            {
                "type": SESSION_EXPIRED,
                "timestamp": now_ms(),
                "message": "Your session has expired: reconnect with a new token",
            }
        )
        conn.close(CLOSE_AUTH, SESSION_EXPIRED)
