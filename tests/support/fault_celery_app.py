"""The fault tests' own Celery app (queue ``jobcast-test-fault``), with jobcast installed.

``fault.hammer`` calls ``report()`` in a tight loop (progress coalescing), retrying itself
once half way so that the run has a status change in the middle of the flood.
"""

from __future__ import annotations

from typing import Any

from tests.support.celery_local_app import user_app
from workers.progress import report

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
