"""Token lifetime on live connections: warn before ``exp``, close at ``exp``.

A connection is told ``session_expiring`` ``JOBCAST_SESSION_WARNING_SECONDS`` before its
token expires (at once if less remains), then ``session_expired``, and is closed — unless
it sends ``refresh_token`` with a valid token for the same ``sub`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from notifier.events import now_ms
from notifier.hub import Connection
from notifier.outbox import CLOSE_AUTH

SESSION_EXPIRED = "session_expired"


class Sessions:
    def __init__(self, warning_seconds: float) -> None:
        self._warning = warning_seconds
        self._timers: dict[str, asyncio.Task[None]] = {}

    def watch(self, conn: Connection) -> None:
        """(Re)start the clock of ``conn`` from its principal's ``exp``."""
        self.forget(conn)
        if conn.principal.expires_at != float("inf"):
            self._timers[conn.id] = asyncio.get_running_loop().create_task(self._run(conn))

    def forget(self, conn: Connection) -> None:
        timer = self._timers.pop(conn.id, None)
        if timer is not None and timer is not _current_task():
            timer.cancel()

    async def _run(self, conn: Connection) -> None:
        expires_at = conn.principal.expires_at
        await asyncio.sleep(max(0.0, expires_at - self._warning - time.time()))
        conn.send(
            {
                "type": "session_expiring",
                "expiresAt": int(expires_at * 1000),
                "timestamp": now_ms(),
                "message": "Your session expires soon: send refresh_token with a new token",
            }
        )
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        conn.send(
            {
                "type": SESSION_EXPIRED,
                "timestamp": now_ms(),
                "message": "Your session has expired: reconnect with a new token",
            }
        )
        self._timers.pop(conn.id, None)
        conn.close(CLOSE_AUTH, SESSION_EXPIRED)


def _current_task() -> asyncio.Task[object] | None:
    with contextlib.suppress(RuntimeError):
        return asyncio.current_task()
    return None
