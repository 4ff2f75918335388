"""Canvas jobs, submit side: a group, chain or chord submitted with an owner is one job.

:func:`prepare` copies the canvas and gives every member (every plain task signature in it)
the owner, the canvas's job id and its share (``jobcast_member``: index, weight, total
weight, member count, the shape of the canvas's result) in its own ``options['headers']``,
plus a task id of its own. Celery passes a group's, chain's or chord's own options down to
the members over theirs (``group._apply_tasks``, ``chain.run``, ``chord.run`` in
``celery/canvas.py``), so the headers go on each member and never on the canvas; Celery
keeps a member signature's options when a worker later publishes it (the next step of a
chain, a chord's body). :func:`submit` records the member task ids (for cancelling and for
signals sent without headers), publishes ``queued`` once and applies the canvas. The worker
side is :mod:`workers.aggregate`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from celery.canvas import Signature, _chain, _chord, chunks, group, maybe_signature
from celery.result import AsyncResult
from celery.utils import uuid

from notifier.contract import keys
from notifier.contract.events import (
    QUEUED,
    job_error,
    status_update,
)
from notifier.contract.keys import keyspace
from notifier.core.bus import SyncRedis
from workers import publisher
from workers.tracking import HEADER_JOB, HEADER_MEMBER, HEADER_USER, Member

log = logging.getLogger(__name__)

#: The option that weighs a member: ``sig.set(jobcast_weight=2)`` (default 1).
WEIGHT_OPTION = "jobcast_weight"


def is_canvas(task: Any) -> bool:
    return isinstance(task, (group, _chain, _chord, chunks))


@dataclass(frozen=True, slots=True)
class Prepared:
    canvas: Signature
    task_ids: list[str]


def prepare(canvas: Signature, *, job_id: str, user_id: str, headers: dict[str, Any]) -> Prepared:
    """A copy of ``canvas`` whose members carry the job's headers (the caller's canvas is
    left as it was). ``ValueError`` for a canvas without members or a bad weight."""
    leaves: list[Signature] = []
    copy, shape = _copy(canvas, leaves, getattr(canvas, "_app", None))
    if not leaves:
        raise ValueError("the canvas has no tasks")
    weights = [_weight(leaf) for leaf in leaves]
    total = sum(weights)
    kept = set(_indexes(shape))
    task_ids = []
    for index, (leaf, weight) in enumerate(zip(leaves, weights, strict=True)):
        member = Member(index, weight, total, len(leaves), shape, index in kept)
        leaf.options["headers"] = {
            **(leaf.options.get("headers") or {}),
            **headers,
            HEADER_USER: user_id,
            HEADER_JOB: job_id,
            HEADER_MEMBER: member.header(),
        }
        task_ids.append(leaf.options.setdefault("task_id", uuid()))
    return Prepared(copy, task_ids)


def _copy(sig: Any, leaves: list[Signature], app: Any) -> tuple[Signature, Any]:
    """Copy ``sig`` depth first, collecting its plain task signatures in ``leaves``; returns
    the copy and the shape of its result (member indexes nested in lists)."""
    sig = maybe_signature(sig, app=app)
    if isinstance(sig, chunks):
        sig = sig.group()
    if isinstance(sig, group):
        copy = sig.clone()
        parts = [_copy(task, leaves, app) for task in sig.tasks]
        copy.tasks = [part for part, _ in parts]
        return copy, [shape for _, shape in parts]
    if isinstance(sig, _chord):
        copy = sig.clone()
        header = [_copy(task, leaves, app) for task in sig.tasks]
        copy.tasks = [part for part, _ in header]
        copy.body, shape = _copy(sig.body, leaves, app)
        return copy, shape
    if isinstance(sig, _chain):
        copy = sig.clone()
        steps = [_copy(task, leaves, app) for task in sig.tasks]
        copy.tasks = [part for part, _ in steps]
        return copy, steps[-1][1] if steps else []
    copy = sig.clone()
    leaves.append(copy)
    return copy, len(leaves) - 1


def _weight(leaf: Signature) -> float:
    raw = leaf.options.pop(WEIGHT_OPTION, None)
    if raw is None:
        return 1.0
    try:
        weight = float(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{WEIGHT_OPTION} must be a positive number, not {raw!r}") from exc
    if not weight > 0 or weight == float("inf"):
        raise ValueError(f"{WEIGHT_OPTION} must be a positive number, not {raw!r}")
    return weight


def _indexes(shape: Any) -> list[int]:
    if isinstance(shape, list):
        return [index for part in shape for index in _indexes(part)]
    return [shape]


def submit(
    canvas: Signature,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    user_id: str,
    headers: dict[str, Any],
    options: dict[str, Any],
) -> str:
    job = str(uuid())
    prepared = prepare(canvas, job_id=job, user_id=user_id, headers=headers)
    retention = publisher.settings().retention_seconds
    part = keyspace(publisher.settings().partitions).of_user(user_id)

    def register(client: SyncRedis) -> None:
        with client.pipeline(transaction=False) as pipe:
            pipe.hset(part.canvas(job), "tasks", json.dumps(prepared.task_ids))
            pipe.expire(part.canvas(job), retention)
            for task_id in prepared.task_ids:
                pipe.set(keys.task_job(task_id), job, ex=retention)
            pipe.execute()

    publisher.call(register)
    publisher.emit(status_update(job, user_id, QUEUED, progress=0, message="Queued"))
    try:
        result = prepared.canvas.apply_async(args, kwargs, **options)
    except Exception as exc:
        publisher.emit(
            job_error(
                job,
                user_id,
                f"the canvas could not be published: {exc}",
                exception_type=type(exc).__name__,
            )
        )
        raise
    _stop_waiting(result, prepared.task_ids)
    return job


def _stop_waiting(result: Any, task_ids: list[str]) -> None:
    """Drop the result subscriptions that applying the canvas left in this process.

    Celery's ``GroupResult`` (for a group, and for a chord's header, also one made inside
    ``chord.run``) subscribes the publishing process to its members' results and keeps
    them in the backend's pending results until they arrive, which they never do in a
    process that does not wait on them: a leak per canvas, and at exit an unsubscribe from
    a result backend that may be gone. jobcast follows the canvas through its own events,
    so it drops them at once (``_pending_results`` is the backend's own table of them).
    """
    ids, stack, seen = set(task_ids), [result], set()
    backend = getattr(result, "backend", None)
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, AsyncResult):
            ids.add(item.id)
        stack.extend(getattr(item, "results", None) or ())
        stack.append(getattr(item, "parent", None))
    consumer = getattr(backend, "result_consumer", None)
    pending = getattr(backend, "_pending_results", None) or ()
    try:
        for task_id in ids:
            for mapping in pending:
                mapping.pop(task_id, None)
            if consumer is not None:
                consumer.cancel_for(task_id)
    except Exception:
        log.warning("could not drop the canvas's result subscriptions", exc_info=True)
