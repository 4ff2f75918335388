"""A per-connection outbound queue: bounded in bytes, coalescing progress and joining output
chunks, a writer task on demand.

When the connection is idle (nothing queued, no writer running) and the transport takes a
message at once without blocking (``write_now``: Socket.IO hands it to its Engine.IO
session, which writes it to the WebSocket), the message goes straight out from ``put``: no
task switch per recipient, the cost that dominates a fan-out to thousands of connections.
A writer task exists only while messages wait (the transport is backed up, or it has no
direct path): an idle connection holds no task of its own.

The dispatcher only ever appends here, so a client that stops reading can neither stall
delivery to the others nor grow the server's memory without bound. While a progress
update of a job waits unsent, a newer one for the same job replaces it (status changes and
terminal events are never merged). While a ``job_output`` chunk of a job waits unsent, the
next chunk of that job (contiguous by offset) is joined to it: one message with the first
offset, the texts concatenated, the newest ``eventId`` — no text is dropped. Nothing of a
job moves past another message of that job: a progress update queued after a chunk ends
the joining (the next chunk goes after it), as a chunk queued after a progress update
ends its replacing, and a status change, a terminal event or a snapshot end both. Past
``limit`` bytes the connection is closed with reason ``slow_consumer`` (an empty outbox
takes any one message, however large); the client recovers by replay (and the snapshot's
output) when it reconnects.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from notifier.observability import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = Callable[[dict[str, Any]], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]
Pressure = Callable[[], bool]
WriteNow = Callable[[dict[str, Any]], bool]

SLOW_CONSUMER = "slow_consumer"
# WebSocket close codes (the native endpoint shows them; Socket.IO clients see a disconnect).
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_AUTH = 4401
CLOSE_TOO_MANY = 4429


def _progress_job(message: dict[str, Any]) -> str | None:
    """The job of a pure progress update (mergeable), else None."""
    if message.get("type") != "job_status_update" or message.get("snapshot"):
        return None
    data = message.get("data")
    if isinstance(data, dict) and data.get("status") == "processing":
        job = message.get("jobId")
        return job if isinstance(job, str) else None
    return None


def _output_chunk(message: dict[str, Any]) -> tuple[str, int, str] | None:
    """``(job, offset, text)`` of a ``job_output`` message (joinable), else None."""
    if message.get("type") != "job_output":
        return None
    data = message.get("data")
    job = message.get("jobId")
    if not isinstance(data, dict) or not isinstance(job, str):
        return None
    offset, text = data.get("offset"), data.get("text")
    if type(offset) is not int or not isinstance(text, str):
        return None
    return job, offset, text


class _Item:
    __slots__ = ("end", "message", "parts", "size")

    def __init__(
        self, message: dict[str, Any], size: int, chunk: tuple[str, int, str] | None = None
    ) -> None:
        self.message = message
        self.size = size
        #: A job_output chunk: where it ends (code points; -1 for other messages), and the
        #: texts joined to it so far (concatenated once, when it is written).
        self.end = -1 if chunk is None else chunk[1] + len(chunk[2])
        self.parts: list[str] | None = None

    def join(self, message: dict[str, Any], offset: int, text: str, size: int) -> bool:
        """Join the next output chunk of the same job if it starts where this one ends."""
        if offset != self.end:
            return False
        if self.parts is None:
            self.parts = [self.message["data"]["text"]]
        self.parts.append(text)
        self.end += len(text)
        # The newest id and time; the offset stays the first chunk's.
        first = self.message["data"]["offset"]
        self.message = {**message, "data": {**message["data"], "offset": first}}
        self.size += size
        return True

    def wire(self) -> dict[str, Any]:
        """The message to write (a joined chunk's texts concatenated, once)."""
        if self.parts is not None:
            self.message["data"]["text"] = "".join(self.parts)
            self.parts = None
        return self.message


class Outbox:
    """Opened by :meth:`start`; until then messages wait (the transport greets the client first)."""

    __slots__ = (
        "_backpressure",
        "_bytes",
        "_close",
        "_close_transport",
        "_done",
        "_finished",
        "_items",
        "_latest_output",
        "_latest_progress",
        "_limit",
        "_started",
        "_write",
        "_write_now",
        "_writer",
        "merged",
    )

    def __init__(
        self,
        write: Write,
        close: Close,
        limit: int,
        *,
        backpressure: Pressure | None = None,
        write_now: WriteNow | None = None,
    ) -> None:
        self._write = write
        self._write_now = write_now
        self._close_transport = close
        self._limit = limit
        self._backpressure = backpressure
        self._items: deque[_Item] | None = None  # while messages wait
        self._latest_progress: dict[str, _Item] = {}
        self._latest_output: dict[str, _Item] = {}
        self._bytes = 0
        self._started = False
        self._writer: asyncio.Task[None] | None = None
        self._close: tuple[int, str] | None = None
        self._finished = False  # closed its transport, or a write failed
        self._done: asyncio.Future[None] | None = None
        self.merged = 0

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def start(self) -> None:
        """Begin writing (what waits first, in order)."""
        self._started = True
        self._wake()

    def put(self, message: dict[str, Any], size: int) -> bool:
        """Queue ``message`` (about ``size`` bytes encoded); False once closing."""
        if self._close is not None:
            return False
        if (
            self._writer is None
            and self._started
            and not self._items
            and self._write_now is not None
            and self._write_now(message)
        ):
            return True
        job = _progress_job(message)
        chunk = _output_chunk(message) if job is None else None
        if job is not None:
            waiting = self._latest_progress.get(job)
            if waiting is not None:  # still unsent: replace it with the newer value
                self._bytes += size - waiting.size
                waiting.message, waiting.size = message, size
                self.merged += 1
                return True
            self._latest_output.pop(job, None)  # a later chunk goes after this progress
        elif chunk is None:
            holder = message.get("jobId")
            if isinstance(holder, str):  # a later progress or chunk goes after this
                self._latest_progress.pop(holder, None)
                self._latest_output.pop(holder, None)
        # Nothing queued: any one message is taken, however large; past that, the bound
        # holds.
        if self._bytes and self._bytes + size > self._limit:
            log.warning("slow consumer: closing", extra={"queued_bytes": self._bytes})
            metrics.SLOW_CONSUMER_CLOSES.inc()
            self._items = None
            self._latest_progress.clear()
            self._latest_output.clear()
            self._bytes = 0
            self.close(CLOSE_POLICY, SLOW_CONSUMER)
            return False
        if chunk is not None:
            waiting = self._latest_output.get(chunk[0])
            if waiting is not None and waiting.join(message, chunk[1], chunk[2], size):
                self._bytes += size  # still unsent: the text joins it, in order
                self.merged += 1
                return True
            item = _Item(message, size, chunk)
            self._latest_output[chunk[0]] = item
            self._latest_progress.pop(chunk[0], None)  # a later progress goes after this
        else:
            item = _Item(message, size)
            if job is not None:
                self._latest_progress[job] = item
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._bytes += size
        self._wake()
        return True

    def close(self, code: int, reason: str) -> None:
        """Close once the messages already queued are written."""
        if self._close is None:
            self._close = (code, reason)
        self._wake()

    def done(self) -> asyncio.Future[None]:
        """Resolved once the outbox has closed its transport, or a write failed."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            if self._finished:
                self._done.set_result(None)
        return self._done

    def stop(self) -> None:
        """The connection is gone: cancel a running writer; nothing more is written."""
        self._started = False
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None

    def _wake(self) -> None:
        if (
            self._writer is None
            and self._started
            and not self._finished
            and (self._items or self._close is not None)
        ):
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """The writer: writes in order, waiting while the transport is backed up; ends idle."""
        try:
            while self._items:
                if self._backpressure is not None:
                    for _ in range(200):  # bounded wait; the byte limit does the rest
                        if not self._backpressure() or self._close is not None:
                            break
                        await asyncio.sleep(0.01)
                    if not self._items:  # dropped meanwhile (closed as a slow consumer)
                        break
                item = self._items.popleft()
                if not self._items:
                    self._items = None
                self._bytes -= item.size
                job = item.message.get("jobId")
                if isinstance(job, str):
                    if self._latest_progress.get(job) is item:
                        del self._latest_progress[job]
                    elif self._latest_output.get(job) is item:
                        del self._latest_output[job]
                try:
                    await self._write(item.wire())
                except Exception as exc:  # the transport is gone; the adapter cleans up
                    log.info("write failed; writer stops", extra={"error": repr(exc)})
                    self._finish()
                    return
            if self._close is not None:
                try:
                    await self._close_transport(*self._close)
                finally:
                    self._finish()
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None  # no await from the last check of the queue to here

    def _finish(self) -> None:
        self._finished = True
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
