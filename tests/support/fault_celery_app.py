"""The fault tests' own Celery app (queue ``jobcast-test-fault``), with jobcast installed.

``fault.hammer`` calls ``report()`` in a tight loop (progress coalescing), retrying itself
once half way so that the run has a status change in the middle of the flood.
``fault.streamer`` calls ``stream()`` (live output), in a tight loop or paced.
"""

from __future__ import annotations

import time
from typing import Any

from tests.support.celery_local_app import user_app
from workers.progress import report, stream

QUEUE = "jobcast-test-fault"

app = user_app(QUEUE)


@app.task(bind=True, name="fault.hammer", max_retries=1)
def hammer(self: Any, reports: int = 100_000) -> dict[str, Any]:
    """``reports`` calls of ``report()`` in all: the first half (0 → 50) in the first
    attempt, which then retries; the second half (50 → 100) in the retry."""
    half = reports // 2
    if self.request.retries == 0:
        for i in range(half):
            report(50 * i / (half - 1), "first half")
        raise self.retry(exc=RuntimeError("half way"), countdown=0.2)
    rest = reports - half
    for i in range(rest):
        report(50 + 50 * i / (rest - 1), "second half")
    return {"reports": reports}


def streamed_piece(index: int, piece: str) -> str:
    """The ``index``-th text ``fault.streamer`` streams: a 6-digit counter and ``piece``."""
    return f"{index % 1_000_000:06d}{piece}"


@app.task(bind=True, name="fault.streamer")
def streamer(self: Any, count: int, piece: str = "", pause: float = 0.0) -> dict[str, Any]:
    """``stream()`` ``count`` times (``pause`` seconds apart; 0: a tight loop), each call
    :func:`streamed_piece` (:func:`streamed_text` is the whole output); the result holds,
    as figures only, the time the calls took (``secondsStreaming``) and, for comparison, as many
    ``report()`` calls' time (``secondsReporting``: progress, coalesced the same way)."""
    started = time.perf_counter()
    for index in range(count):
        stream(streamed_piece(index, piece))
        if pause:
            time.sleep(pause)
    streaming = time.perf_counter() - started - count * pause
    started = time.perf_counter()
    if not pause:
        for index in range(count):
            report(100 * index / count, "reporting")
    reporting = time.perf_counter() - started
    return {"count": count, "secondsStreaming": streaming, "secondsReporting": reporting}


def streamed_text(count: int, piece: str = "") -> str:
    """Everything ``fault.streamer`` streams for these arguments."""
    return "".join(streamed_piece(index, piece) for index in range(count))
