"""Token lifetime on live connections: warn before ``exp``, close at ``exp``.

A connection is told ``session_expiring`` ``JOBCAST_SESSION_WARNING_SECONDS`` before its
token expires (at once if less remains), then ``session_expired``, and is closed — unless
it sends ``refresh_token`` with a valid token for the same ``sub`` first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from notifier.contract.events import now_ms
from notifier.core.hub import Connection
from notifier.core.outbox import CLOSE_AUTH

SESSION_EXPIRED = "session_expired"


class Sessions:
    """One timer handle per connection (not a task: a task and its frame per connection
    cost memory while they wait for hours)."""

    def __init__(self, warning_seconds: float) -> None:
        self._warning = warning_seconds
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def watch(self, conn: Connection) -> None:
        """(Re)start the clock of ``conn`` from its principal's ``exp``."""
        self.forget(conn)
        expires_at = conn.principal.expires_at
        if expires_at != float("inf"):
            self._schedule(conn, expires_at - self._warning, self._warn)

    def forget(self, conn: Connection) -> None:
        timer = self._timers.pop(conn.id, None)
        if timer is not None:
            timer.cancel()

    def _schedule(self, conn: Connection, at: float, step: Callable[[Connection], None]) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, at - time.time())  # the token's clock is the wall clock
        self._timers[conn.id] = loop.call_at(loop.time() + delay, step, conn)

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
        self._timers.pop(conn.id, None)
        conn.send(
            {
                "type": SESSION_EXPIRED,
                "timestamp": now_ms(),
                "message": "Your session has expired: reconnect with a new token",
            }
        )
        conn.close(CLOSE_AUTH, SESSION_EXPIRED)
