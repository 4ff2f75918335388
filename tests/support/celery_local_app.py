"""A Celery app of the tests' own, not the bundled ``workers.app``: jobcast is dropped into
it with ``workers.install(app)``. Its worker is started by the tests
(``celery -A tests.support.celery_local_app worker -Q jobcast-test-local``); its tasks go to a queue
of their own, so the bundled worker never takes them.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.exceptions import Reject

import workers
from workers.progress import report

QUEUE = "jobcast-test-local"


def user_app(queue: str) -> Celery:
    """A plain JSON-only Celery app named after, and routing to, ``queue``, with jobcast
    dropped in by ``workers.install`` (as a user would do with theirs)."""
    app = Celery(queue, broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
    app.conf.update(
        task_default_queue=queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=3600,
    )
    workers.install(app)
    return app


app = user_app(QUEUE)


@app.task(bind=True, name="local.steady")
def steady(self: Any, steps: int = 4, seconds: float = 0.3, result: Any = None) -> Any:
    """Reports 0, then ``steps`` equal steps ``seconds`` apart."""
    report(0, "Starting")
    for step in range(1, steps + 1):
        time.sleep(seconds)
        report(step * 100 / steps, f"Step {step} of {steps}", step=step)
    return {"steps": steps} if result is None else result


@app.task(bind=True, name="local.flaky", max_retries=5)
def flaky(self: Any, failures: int = 2, countdown: float = 1) -> dict[str, int]:
    """Retries itself ``failures`` times, then succeeds."""
    report(10, "Trying")
    if self.request.retries < failures:
        raise self.retry(exc=RuntimeError("not yet"), countdown=countdown)
    report(100, "Done")
    return {"runs": self.request.retries + 1}


@app.task(name="local.add")
def add(x: int, y: int, seconds: float = 0.2) -> int:
    report(0, "Adding")
    time.sleep(seconds)
    report(50, "Half way")
    time.sleep(seconds)
    return x + y


@app.task(name="local.total")
def total(values: list[int], seconds: float = 0.2) -> int:
    report(0, "Summing")
    time.sleep(seconds)
    report(50, "Half way")
    time.sleep(seconds)
    return sum(values)


@app.task(name="local.fail")
def fail(seconds: float = 0.2) -> None:
    time.sleep(seconds)
    raise ValueError("member failed on purpose")


@app.task(name="local.sleepy")
def sleepy(seconds: float = 30.0) -> str:
    """Runs (and reports) until it is stopped."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        report(1, "Sleeping")
        time.sleep(0.2)
    return "woke up"


@app.task(name="local.big")
def big(size: int) -> dict[str, str]:
    return {"blob": "x" * size}


@app.task(name="local.not_json")
def not_json() -> dict[str, Any]:
    # Celery's JSON (kombu) stores a datetime; jobcast's wire is plain JSON only.
    return {"when": datetime(2024, 1, 1, tzinfo=UTC)}


@app.task(name="local.unserialisable")
def unserialisable() -> set[int]:
    return {1, 2, 3}  # not even Celery's JSON can store it


@app.task(name="local.reject")
def reject() -> None:
    raise Reject("not for this worker", requeue=False)


@app.task(name="local.overtime", time_limit=1)
def overtime() -> None:
    time.sleep(30)


@app.task(name="local.die")
def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
