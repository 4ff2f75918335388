"""The producer API: ``report()`` and ``stream()`` inside any Celery task.

    from workers.progress import report, stream

    @app.task(bind=True)
    def generate_content(self, topic):
        report(10, "Outlining")
        report(50, "Writing", section=3)   # extra keyword fields go into data
        stream("The first words of section 3")   # appended to the job's live output

Importing this module creates no Celery app and opens no connection.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import current_task
from celery.backends.base import DisabledBackend

from notifier.contract.events import PROCESSING, Event, clamp_progress, status_update
from workers.tracking import RUNS, Run

log = logging.getLogger(__name__)


def report(progress: float, message: str | None = None, **fields: Any) -> None:
    """Report the running task's progress (0-100) and an optional message.

    Also stores a ``PROGRESS`` state with the same meta in the result backend and sends a
    ``task-progress`` event, so ``AsyncResult`` and Flower show it. Never raises: a bad
    value or an unreachable Redis is logged, and the task carries on.
    """
    try:
        _report(progress, message, fields)
    except Exception:
        log.exception("report() failed; the task continues")


def stream(text: str) -> None:
    """Append ``text`` to the running job's live output (``job_output`` messages, the
    snapshot's ``data.output``). Calls faster than ``JOBCAST_PROGRESS_MIN_INTERVAL_MS`` are
    joined into one chunk; nothing is dropped or reordered, and the chunks held when the
    task ends go out before its outcome. Canvas members append to their canvas job's
    output. Past ``JOBCAST_OUTPUT_MAX_BYTES`` the text is dropped. A no-op outside a tracked
    task; never raises (anything but a ``str`` is converted with ``str()``)."""
    try:
        task = current_task
        if task is None:
            return
        request = task.request
        run = RUNS.get(request.id)
        if run is None or request.called_directly:
            return
        run.stream(text if type(text) is str else str(text))
    except Exception:
        log.exception("stream() failed; the task continues")


def _report(progress: float, message: str | None, fields: dict[str, Any]) -> None:
    task = current_task
    if task is None or task.request.called_directly:
        return
    value = clamp_progress(progress)
    run = RUNS.get(task.request.id)
    if run is None:  # untracked: still show it in the result backend and Flower
        _celery_state(task, {"progress": value, "message": message, **fields})
        return
    event = progress_step(run, value, message, fields)
    if event is not None:
        _celery_state(task, dict(event.snapshot))


def progress_step(
    run: Run, value: float, message: str | None, fields: dict[str, Any]
) -> Event | None:
    """Build the run's next progress event (``value`` already clamped) and hand it to its
    publisher; the event when it went out now, None when it was coalesced."""
    # A canvas member's ETA is the canvas's, estimated from the aggregate (workers.aggregate).
    eta = run.eta.update(value, time.monotonic()) if run.member is None else None
    extra = dict(fields)
    if eta is not None:
        extra["etaSeconds"] = eta
    event = status_update(
        run.job_id,
        run.user_id,
        PROCESSING,
        progress=value,
        message=message,
        attempt=run.attempt,
        seq=run.next_seq(),
        **extra,
    )
    return event if run.progress(event, urgent=value >= 100 and not run.reached_end) else None


def _celery_state(task: Any, meta: dict[str, Any]) -> None:
    if not isinstance(task.backend, DisabledBackend):  # an app without a result backend
        task.update_state(state="PROGRESS", meta=meta)
    task.send_event("task-progress", **meta)
