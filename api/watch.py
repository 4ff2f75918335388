"""``jobcast watch``: follow one job with :class:`notifier.client.JobcastClient` and a
terminal progress bar, print its live output as it arrives, then say how it ended.

On a terminal the bar is redrawn in place (``\\r``, erase line); into a pipe or a file each
change is a line of its own, so logs read well too. The job's output (``job_output``,
assembled by offset) is written as it comes, above the bar: while its last line is
unfinished the bar waits, and it is drawn again once the line ends.
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
from notifier.contract.events import JOB_COMPLETED, JOB_ERROR, JOB_OUTPUT, JOB_STATUS_UPDATE

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
        #: The output written so far ends a line (the bar may be drawn below it).
        self._line_start = True
        #: On a terminal, the bar is on the current line (erased before more output).
        self._bar_shown = False

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

    def output(self, text: str) -> None:
        """Write more of the job's output (above the bar, which waits for a line's end)."""
        if not text:
            return
        if self._bar_shown:  # on a terminal: the bar's line is taken over by the text
            self.out.write("\r\x1b[K")
            self._bar_shown = False
            self._last_line = ""  # drawn again below the text
        self.out.write(text)
        self._line_start = text.endswith("\n")
        self.out.flush()
        self._draw()

    def _draw(self) -> None:
        line = self.line()
        if line == self._last_line or not self._line_start:
            return
        self._last_line = line
        if self.tty:
            columns = shutil.get_terminal_size((100, 24)).columns
            self.out.write("\r\x1b[K" + line[: max(20, columns - 1)])
            self._bar_shown = True
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        """End an unfinished line of output and the redrawn bar (on a terminal), showing
        the last state, so what follows starts on a line of its own."""
        if not self._line_start:
            self.out.write("\n")
            self._line_start = True
            self._draw()
        if self._bar_shown:
            self.out.write("\n")
            self._bar_shown = False
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
    shown = 0  # code points of the job's output written so far
    try:
        async with asyncio.timeout(limit_seconds):
            await _connect(client)
            async for message in client.watch(job_id):
                last = message
                if message.get("type") == JOB_OUTPUT or message.get("snapshot"):
                    text = client.output(job_id)  # assembled by offset, only ever longer
                    bar.output(text[shown:])
                    shown = len(text)
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
        if isinstance(result, dict) and isinstance(result.get("content"), str):
            # The job's output, already written as it came (the bundled task's result).
            result = {**result, "content": f"<{len(result['content'])} characters, above>"}
        print(f"completed: {title or 'done'}")
        print("result: " + json.dumps(result, sort_keys=True, default=str), flush=True)
        return EXIT_COMPLETED
    if kind == JOB_ERROR:
        print(f"failed ({data.get('code', 'error')}): {message.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    status = data.get("status", "unknown")
    print(f"{status}: {data.get('message') or 'the job ended without a result'}", file=sys.stderr)
    return EXIT_OTHER
