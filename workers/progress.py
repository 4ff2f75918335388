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
import threading
from collections.abc import Callable
from typing import Any

from celery import current_task
from celery._state import get_current_task

from notifier.contract.events import Event, clamp_progress
from workers import celery_state, publisher
from workers.tracking import RUNS, Run

log = logging.getLogger(__name__)


def report(progress: float, message: str | None = None, **fields: Any) -> None:
    """Report the running task's progress (0-100) and an optional message.

    Each event that goes out also stores a ``PROGRESS`` state with the same meta in the
    result backend and sends a ``task-progress`` event (from the publisher thread), so
    ``AsyncResult`` and Flower show it. A report within ``JOBCAST_PROGRESS_MIN_INTERVAL_MS``
    of the last event is only kept as the latest (no event built, no I/O); one that goes
    out costs the task's thread one pipelined write when the result backend is jobcast's
    Redis (see ``workers.celery_state``). Never raises: a bad value or an unreachable Redis
    is logged, and the task carries on.
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


class _ThisThread(threading.local):
    """The tracked run of the task running on this thread, as the last ``report()`` found
    it: the task, its request, the run and how its events go out. Still current while
    the task and its request are the thread's current ones and the run has not ended."""

    task: Any = None
    request: Any = None
    run: Run | None = None
    send: Callable[[Event], object] | None = None


_this_thread = _ThisThread()


def _report(progress: float, message: str | None, fields: dict[str, Any]) -> None:
    task = get_current_task()
    if task is None:
        return
    cached = _this_thread
    run = cached.run
    if (
        run is None
        or task is not cached.task
        or run.finished
        or task.request_stack.top is not cached.request
    ):
        request = task.request
        if request.called_directly:
            return
        run = RUNS.get(request.id)
        if run is None:  # untracked: still show it in the result backend and Flower
            meta = {"progress": clamp_progress(progress), "message": message, **fields}
            _celery_state(task, request, meta)
            return
        cached.task, cached.request, cached.run = task, request, run
        cached.send = _sender(task, request, run)
    value = float(progress)
    if value != value:  # NaN
        raise ValueError("progress must be a number between 0 and 100")
    run.report(value, message, fields, send=cached.send)


def _sender(task: Any, request: Any, run: Run) -> Callable[[Event], object]:
    """How a progress event of ``run`` goes out from the task's thread: with the task's
    PROGRESS state, in one pipelined write when Celery's result backend is jobcast's Redis;
    Flower's event from the publisher thread."""
    if run.member is not None:  # a canvas member: the run's emit folds it into the canvas

        def send_member(event: Event) -> None:
            run.emit(event)
            _celery_state(task, request, dict(event.snapshot))

        return send_member

    def send(event: Event) -> None:
        meta = dict(event.snapshot)
        write = celery_state.redis_write(task, request, meta, publisher.client())
        publisher.emit_progress(event, write)
        publisher.later(celery_state.flower_event(task, request, meta))
        if write is None:
            celery_state.store(task, meta)

    return send


def progress_step(
    run: Run, value: float, message: str | None, fields: dict[str, Any]
) -> Event | None:
    """Hand a progress report (``value`` already clamped) to ``run``: the event when it
    went out now, None when it was held (its event is built only if it goes out)."""
    return run.report(float(value), message, fields)


def _celery_state(task: Any, request: Any, meta: dict[str, Any]) -> None:
    celery_state.store(task, meta)
    publisher.later(celery_state.flower_event(task, request, meta))
