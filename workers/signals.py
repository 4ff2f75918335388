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

from billiard.exceptions import SoftTimeLimitExceeded
from billiard.exceptions import WorkerLostError as BilliardWorkerLostError
from celery.backends.base import DisabledBackend
from celery.exceptions import Reject, TimeLimitExceeded, WorkerLostError

from notifier.contract.events import (
    CANCELLED,
    QUEUED,
    STARTED,
    job_completed,
    job_error,
    result_payload,
    retrying,
    status_update,
)
from workers import aggregate, publisher
from workers.tracking import (
    HEADER_JOB,
    HEADER_MEMBER,
    HEADER_USER,
    RUNS,
    Run,
    member_from,
    owner_from,
)

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
    if user is None or user == "" or headers.get("retries") or headers.get(HEADER_MEMBER):
        # Untracked; a retry's re-publish (task_retry reports that); or a canvas member
        # (submit() published the canvas's one `queued`).
        return
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
    member = member_from(task.request)
    run = RUNS.start(
        task_id,
        Run(
            job,
            user,
            task.request.retries or 0,
            settings.progress_min_interval_ms / 1000,
            publisher.emit if member is None else aggregate.progress_emitter(job, user, member),
            member=member,
            output=publisher.output_sink(job, user),
            output_limit=settings.output_max_bytes,
        ),
    )
    if member is not None:
        aggregate.started(job, user, task_id)
        return
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
    delay = _retry_delay(reason)
    message = f"Retrying: {_describe(getattr(reason, 'exc', None) or reason)}"
    if member_from(request) is not None:
        aggregate.retried(job, user, retries + 1, delay, message)
        return
    publisher.emit(
        retrying(
            job,
            user,
            retries + 1,
            retry_in_seconds=delay,
            message=message,
            attempt=retries,
            seq=run.next_seq() if run else 0,
        )
    )


@never_raises
def on_task_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    request = getattr(sender, "request", None)
    owner = owner_from(request) if request is not None else None
    if request is None or owner is None:
        return
    job, user = owner
    run = RUNS.finish(request.id)
    member = member_from(request)
    if member is not None:
        aggregate.succeeded(job, user, member, request.id, result)
        return
    attempt, seq = (run.attempt, run.next_seq()) if run else (0, 0)
    try:
        # The marker names the task only where its full result can be fetched.
        kept = not isinstance(getattr(sender, "backend", None), DisabledBackend)
        limit = publisher.settings().result_max_bytes
        payload = result_payload(result, limit, task_id=request.id if kept else None)
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
    publisher.emit(job_completed(job, user, payload, attempt=attempt, seq=seq))


@never_raises
def on_task_failure(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    request = getattr(sender, "request", None)
    owner = owner_from(request) if request is not None else None
    if owner is None and task_id:
        # A rejection or a hard time limit: sent from the worker's main process with an
        # empty request. The job is looked up in Redis by task id.
        owner = publisher.job_of(task_id)
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
        owner = publisher.job_of(task_id)
    if owner is None:
        return
    job, user = owner
    RUNS.finish(task_id)
    reason = "expired" if expired else "terminated" if terminated else "revoked"
    publisher.emit(status_update(job, user, CANCELLED, message=f"Cancelled ({reason})"))


@never_raises
def on_task_postrun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    RUNS.finish(task_id)
    request = getattr(task, "request", None)
    if request is None or member_from(request) is None:
        return
    owner = owner_from(request)
    if owner is not None:
        aggregate.ended(*owner)


@never_raises
def on_task_rejected(message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
    """A message the worker could not take (invalid, or of a task it does not know)."""
    headers = getattr(message, "headers", None) or {}
    user = headers.get(HEADER_USER)
    job = headers.get(HEADER_JOB) or headers.get("id")
    if user is None or user == "" or not job:
        return
    name = headers.get("task") or "task"
    error = f"{name} was rejected by the worker" + (f": {_describe(exc)}" if exc else "")
    publisher.emit(
        job_error(
            str(job),
            str(user),
            error,
            code="rejected",
            exception_type=type(exc).__name__ if exc is not None else None,
        )
    )


def _describe(exc: Any) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    return text if text else type(exc).__name__


def _error_code(exc: BaseException | None) -> str:
    if isinstance(exc, (WorkerLostError, BilliardWorkerLostError)):
        return "worker_lost"
    if isinstance(exc, (TimeLimitExceeded, SoftTimeLimitExceeded)):
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


def on_worker_init(**_: Any) -> None:
    """A worker refuses to start on data written with another ``JOBCAST_PARTITIONS`` (its
    events would land in partitions nobody reads). While Redis does not answer, it starts:
    the first process to reach Redis records the count."""
    import redis

    from notifier.core.bus import PartitionMismatch, check_partitions_sync, sync_client

    config = publisher.settings()
    client = sync_client(config)
    try:
        check_partitions_sync(client, config)
    except PartitionMismatch as exc:
        log.critical("worker not started: %s", exc)
        raise SystemExit(f"jobcast: {exc}") from None
    except (redis.RedisError, OSError) as exc:
        log.warning("partition count not checked: Redis unavailable", extra={"error": str(exc)})
    finally:
        client.close()
