"""Celery signal handlers that turn a tracked task's life cycle into jobcast events.

Each handler accepts ``**kwargs``, logs with ``logger.exception`` and never raises into
Celery. Tasks published without an owner header are ignored after one dict lookup.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from billiard.exceptions import WorkerLostError as BilliardWorkerLostError
from celery.exceptions import Reject, TimeLimitExceeded, WorkerLostError

from notifier.events import (
    CANCELLED,
    QUEUED,
    RETRYING,
    STARTED,
    dumps,
    job_completed,
    job_error,
    status_update,
)
from workers import publisher
from workers.tracking import HEADER_JOB, HEADER_USER, RUNS, Run, owner_from

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., None])


def never_raises(handler: F) -> F:
    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            handler(*args, **kwargs)
        except Exception:
            log.exception("jobcast signal handler failed", extra={"handler": handler.__name__})

    return wrapper  # type: ignore[return-value]


@never_raises
def on_before_task_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if not headers:
        return
    user = headers.get(HEADER_USER)
    if user is None or user == "" or headers.get("retries"):
        return  # untracked, or a retry's re-publish (task_retry reports that)
    job = headers.get(HEADER_JOB) or headers.get("id")
    if job:
        publisher.emit(status_update(str(job), str(user), QUEUED, progress=0, message="Queued"))


@never_raises
def on_task_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    owner = owner_from(task.request) if task is not None else None
    if owner is None or task_id is None:
        return
    job, user = owner
    settings = publisher.settings()
    run = RUNS.start(
        task_id,
        Run(
            job,
            user,
            task.request.retries or 0,
            settings.progress_min_interval_ms / 1000,
            publisher.emit,
        ),
    )
    publisher.emit(
        status_update(
            job, user, STARTED, message="Started", attempt=run.attempt, seq=run.next_seq()
        )
    )


@never_raises
def on_task_retry(request: Any = None, reason: Any = None, **_: Any) -> None:
    owner = owner_from(request)
    if owner is None:
        return
    job, user = owner
    run = RUNS.get(getattr(request, "id", None))
    if run is not None:
        run.flush()
    retries = int(getattr(request, "retries", 0) or 0)
    fields: dict[str, Any] = {"attempt": retries + 1}
    delay = _retry_delay(reason)
    if delay is not None:
        fields["retryInSeconds"] = delay
    publisher.emit(
        status_update(
            job,
            user,
            RETRYING,
            message=f"Retrying: {_describe(getattr(reason, 'exc', None) or reason)}",
            attempt=retries,
            seq=run.next_seq() if run else 0,
            **fields,
        )
    )


@never_raises
def on_task_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    request = getattr(sender, "request", None)
    owner = owner_from(request) if request is not None else None
    if owner is None:
        return
    job, user = owner
    run = RUNS.finish(request.id)
    attempt, seq = (run.attempt, run.next_seq()) if run else (0, 0)
    try:
        dumps(result)
    except (TypeError, ValueError) as exc:
        publisher.emit(
            job_error(
                job,
                user,
                f"the task's result is not JSON: {exc}",
                exception_type=type(exc).__name__,
                attempt=attempt,
                seq=seq,
            )
        )
        return
    publisher.emit(job_completed(job, user, result, attempt=attempt, seq=seq))


@never_raises
def on_task_failure(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    request = getattr(sender, "request", None)
    owner = owner_from(request) if request is not None else None
    if owner is None and task_id:
        # A dead child or a rejection: sent from the worker's main process with an empty
        # request. The job id of a plain task is its task id; its owner is in Redis.
        user = publisher.owner_of(task_id)
        owner = (task_id, user) if user else None
    if owner is None:
        return
    job, user = owner
    run = RUNS.finish(task_id)
    attempt, seq = (run.attempt, run.next_seq()) if run else (0, 0)
    publisher.emit(
        job_error(
            job,
            user,
            _describe(exception),
            code=_error_code(exception),
            exception_type=type(exception).__name__ if exception is not None else None,
            attempt=attempt,
            seq=seq,
        )
    )


@never_raises
def on_task_revoked(
    request: Any = None, terminated: bool = False, expired: bool = False, **_: Any
) -> None:
    task_id = getattr(request, "id", None) or getattr(request, "task_id", None)
    owner = owner_from(request) if request is not None else None
    if owner is None and task_id:
        user = publisher.owner_of(task_id)
        owner = (task_id, user) if user else None
    if owner is None:
        return
    job, user = owner
    RUNS.finish(task_id)
    reason = "expired" if expired else "terminated" if terminated else "revoked"
    publisher.emit(status_update(job, user, CANCELLED, message=f"Cancelled ({reason})"))


@never_raises
def on_task_postrun(task_id: str | None = None, **_: Any) -> None:
    RUNS.finish(task_id)


def _describe(exc: Any) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    return text if text else type(exc).__name__


def _error_code(exc: BaseException | None) -> str:
    if isinstance(exc, (WorkerLostError, BilliardWorkerLostError)):
        return "worker_lost"
    if isinstance(exc, TimeLimitExceeded):
        return "time_limit"
    if isinstance(exc, Reject):
        return "rejected"
    return "task_failed"


def _retry_delay(reason: Any) -> float | None:
    when = getattr(reason, "when", None)
    if isinstance(when, (int, float)):
        return float(when)
    if isinstance(when, datetime):
        delta = (when - datetime.now(UTC if when.tzinfo else None)).total_seconds()
        return round(max(0.0, delta), 3)
    return None
