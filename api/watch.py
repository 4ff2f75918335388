"""``jobcast watch``: follow one job with :class:`notifier.client.JobcastClient` and a
terminal progress bar, then say how it ended.

On a terminal the bar is redrawn in place (``\\r``, erase line); into a pipe or a file each
change is a line of its own, so logs read well too.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import socketio

from notifier.client import JobcastClient
from notifier.contract.events import JOB_COMPLETED, JOB_ERROR, JOB_STATUS_UPDATE

#: Exit statuses: the job completed, failed, or anything else (cancelled, not followed).
EXIT_COMPLETED, EXIT_FAILED, EXIT_OTHER = 0, 1, 2

BAR_WIDTH = 30


def format_eta(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return ""
    if not math.isfinite(seconds) or seconds <= 0:
        return ""
    if seconds < 60:
        return f"ETA {max(1, round(seconds))}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"ETA {minutes}m{rest:02d}s"


def render_bar(progress: float, width: int = BAR_WIDTH, *, unicode: bool = True) -> str:
    """``[█████░░░░░]  50%``: the bar and the percentage, clamped to 0-100."""
    percent = max(0.0, min(100.0, float(progress)))
    filled = round(width * percent / 100)
    full, empty = ("█", "░") if unicode else ("#", "-")
    return f"[{full * filled}{empty * (width - filled)}] {percent:3.0f}%"


class ProgressBar:
    """Shows one job's messages: ``update(message)`` for each, ``finish(message)`` at the end."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        encoding = (getattr(out, "encoding", None) or "ascii").lower()
        self.unicode = "utf" in encoding
        self.progress = 0.0
        self.status = "queued"
        self.message = ""
        self.eta = ""
        self._last_line = ""

    def line(self) -> str:
        parts = [render_bar(self.progress, unicode=self.unicode), self.status]
        if self.message:
            parts.append(self.message)
        if self.eta:
            parts.append(self.eta)
        return "  ".join(parts)

    def update(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        data = _data(message)
        if kind not in (JOB_STATUS_UPDATE, JOB_COMPLETED, JOB_ERROR):
            return  # e.g. the `subscribed` answer
        if kind == JOB_COMPLETED:
            self.progress, self.status, self.message, self.eta = 100.0, "completed", "", ""
        elif kind == JOB_ERROR:
            self.status, self.message, self.eta = "failed", "", ""
        else:
            progress = data.get("progress")
            if isinstance(progress, (int, float)) and not isinstance(progress, bool):
                self.progress = float(progress)
            self.status = str(data.get("status") or self.status)
            self.message = str(data.get("message") or "")
            self.eta = format_eta(data.get("etaSeconds"))
        self._draw()

    def _draw(self) -> None:
        line = self.line()
        if line == self._last_line:
            return
        self._last_line = line
        if self.tty:
            columns = shutil.get_terminal_size((100, 24)).columns
            self.out.write("\r\x1b[K" + line[: max(20, columns - 1)])
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        """End the redrawn line (on a terminal) so what follows starts on a line of its own."""
        if self.tty and self._last_line:
            self.out.write("\n")
            self.out.flush()


def _data(message: dict[str, Any]) -> dict[str, Any]:
    data = message.get("data")
    return data if isinstance(data, dict) else {}


async def follow(
    url: str,
    token: str,
    job_id: str,
    transports: Sequence[str],
    limit_seconds: float | None = None,
) -> int:
    """Follow one job with a progress bar on stdout until it ends; returns the exit status."""
    bar = ProgressBar(sys.stdout)
    client = JobcastClient(url, token, transports=transports)
    last: dict[str, Any] = {}
    try:
        async with asyncio.timeout(limit_seconds):
            await _connect(client)
            async for message in client.watch(job_id):
                last = message
                bar.update(message)
    except TimeoutError:
        bar.close()
        print(
            f"jobcast watch: job {job_id} did not end within {limit_seconds:g} s", file=sys.stderr
        )
        return EXIT_OTHER
    except (socketio.exceptions.SocketIOError, LookupError, OSError) as exc:
        bar.close()
        print(f"jobcast watch: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_OTHER
    finally:
        await client.close()
    bar.close()
    return report_end(last)


async def _connect(client: JobcastClient, attempts: int = 3) -> None:
    """Connect, trying again after a transient failure (the caller checked the token)."""
    for attempt in range(1, attempts + 1):
        try:
            await client.connect()
            return
        except socketio.exceptions.ConnectionError:
            if attempt == attempts:
                raise
            await asyncio.sleep(0.5 * attempt)


def report_end(message: dict[str, Any]) -> int:
    """Print how the job ended; its exit status (0 completed, 1 failed, 2 otherwise)."""
    kind = message.get("type")
    data = _data(message)
    if kind == JOB_COMPLETED:
        result = message.get("result")
        title = result.get("title") if isinstance(result, dict) else None
        print(f"completed: {title or 'done'}")
        print("result: " + json.dumps(result, sort_keys=True, default=str), flush=True)
        return EXIT_COMPLETED
    if kind == JOB_ERROR:
        print(f"failed ({data.get('code', 'error')}): {message.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    status = data.get("status", "unknown")
    print(f"{status}: {data.get('message') or 'the job ended without a result'}", file=sys.stderr)
    return EXIT_OTHER
