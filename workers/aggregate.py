"""Canvas jobs, worker side: one progress, one ``started``, one outcome for the canvas.

Lua scripts keyed by the canvas job (``Partition.canvas``, in its owner's partition) keep
each member's progress (its highest; a finished member counts 100), fold it into a weighted
mean that never goes down, estimate the time left from it, and number the canvas's events
with one sequence for all members, so the bus keeps them in order whichever worker sends
them. The member whose success finishes the canvas publishes ``job_completed`` with the
canvas's result (a group: its members' results in order; a chain: its last task's; a chord:
its body's). The scripts also keep the job's lease in the running set while any member runs,
and drop it while the canvas waits in the queue between members."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from notifier.contract import scripts
from notifier.contract.events import (
    PROCESSING,
    STARTED,
    Event,
    dumps,
    job_completed,
    job_error,
    now_ms,
    result_payload,
    retrying,
    status_update,
)
from notifier.contract.keys import Partition, keyspace
from notifier.core.bus import SyncRedis
from workers import publisher
from workers.tracking import Member

log = logging.getLogger(__name__)


# The canvas scripts; canvas_aggregate.lua holds the functions the first three share.
_PROGRESS_LUA = scripts.source("canvas_aggregate", "canvas_progress")
_DONE_LUA = scripts.source("canvas_aggregate", "canvas_done")
_SEQ_LUA = scripts.source("canvas_aggregate", "canvas_seq")
_START_LUA = scripts.source("canvas_start")
_END_LUA = scripts.source("canvas_end")


@dataclass(frozen=True, slots=True)
class Aggregate:
    progress: float
    eta: float | None
    seq: int
    done: int = 0
    complete: bool = False
    results: dict[str, Any] | None = None

    @classmethod
    def parse(cls, raw: Any) -> Aggregate:
        out = json.loads(raw)
        results = out.get("results")
        return cls(
            progress=float(out["agg"]),
            eta=float(out["eta"]) if out.get("eta") is not None else None,
            seq=int(out["seq"]),
            done=int(out.get("done", 0)),
            complete=bool(out.get("complete")),
            results=results if isinstance(results, dict) else None,
        )


def _script(client: SyncRedis, source: str, script_keys: list[str], args: list[Any]) -> Any:
    return client.register_script(source)(keys=script_keys, args=args)


def _part(user: str) -> Partition:
    """The partition of the canvas's owner: where its keys live."""
    return keyspace(publisher.settings().partitions).of_user(user)


def _lease_args() -> tuple[int, int]:
    config = publisher.settings()
    return int(config.job_lease_seconds * 1000), config.retention_seconds


def assemble(shape: Any, results: dict[str, Any]) -> Any:
    """The canvas's result from its members' results (by index, as JSON text)."""
    if isinstance(shape, list):
        return [assemble(part, results) for part in shape]
    raw = results.get(str(shape))
    return json.loads(raw) if raw is not None else None


# --- the signal handlers' helpers


def started(job: str, user: str, task_id: str) -> None:
    """A member's run started (task_prerun): the canvas's first start publishes ``started``."""
    lease, retention = _lease_args()
    part = _part(user)

    def action(client: SyncRedis) -> int:
        return int(
            _script(
                client,
                _START_LUA,
                [part.canvas(job), part.job(job), part.running],
                [job, task_id, now_ms(), lease, retention],
            )
        )

    seq = publisher.call(action)
    if seq:
        publisher.emit(status_update(job, user, STARTED, message="Started", seq=seq))
        publisher.call(lambda client: client.hset(part.canvas(job), "announced", "1"))


def ended(job: str, user: str) -> None:
    """A member's run ended (task_postrun), whatever its outcome."""
    lease, retention = _lease_args()
    part = _part(user)

    def action(client: SyncRedis) -> object:
        return _script(
            client,
            _END_LUA,
            [part.canvas(job), part.job(job), part.running],
            [job, now_ms(), lease, retention],
        )

    publisher.call(action)


def progress_emitter(job: str, user: str, member: Member) -> Callable[[Event], None]:
    """The ``emit`` of a member's :class:`~workers.tracking.Run`: folds the member's progress
    event into the canvas's aggregate and publishes the canvas's progress."""

    def emit(event: Event) -> None:
        data = event.snapshot
        value = float(data.get("progress", 0))
        _, retention = _lease_args()
        part = _part(user)

        def action(client: SyncRedis) -> Aggregate:
            return Aggregate.parse(
                _script(
                    client,
                    _PROGRESS_LUA,
                    [part.canvas(job)],
                    [member.index, member.weight, member.total_weight, value, now_ms(), retention],
                )
            )

        agg = publisher.call(action)
        if agg is not None and agg.seq:
            extra = {k: v for k, v in data.items() if k not in _OWN_FIELDS}
            publisher.emit(_progress_event(job, user, agg, data.get("message"), extra))

    return emit


_OWN_FIELDS = frozenset({"status", "progress", "message", "etaSeconds"})


def _progress_event(
    job: str, user: str, agg: Aggregate, message: str | None, extra: dict[str, Any]
) -> Event:
    if agg.eta is not None:
        extra = {**extra, "etaSeconds": agg.eta}
    return status_update(
        job, user, PROCESSING, progress=agg.progress, message=message, seq=agg.seq, **extra
    )


def retried(job: str, user: str, retry: int, retry_in_seconds: float | None, message: str) -> None:
    """A member is retried: the canvas job shows ``retrying`` (numbered like the canvas's
    other updates; unnumbered while its ``started`` is on its way)."""
    _, retention = _lease_args()
    part = _part(user)

    def action(client: SyncRedis) -> int:
        return int(_script(client, _SEQ_LUA, [part.canvas(job)], [now_ms(), retention]))

    seq = publisher.call(action)
    publisher.emit(
        retrying(job, user, retry, retry_in_seconds=retry_in_seconds, message=message, seq=seq or 0)
    )


def succeeded(job: str, user: str, member: Member, task_id: str, result: Any) -> None:
    """A member succeeded (task_success): it counts 100, and the member that completes the
    canvas publishes ``job_completed``. Kept until Redis answers, like any outcome."""
    limit = publisher.settings().result_max_bytes
    _, retention = _lease_args()
    part = _part(user)
    encoded = ""
    if member.keep:
        try:
            encoded = dumps(result_payload(result, limit, task_id=task_id))
        except (TypeError, ValueError) as exc:
            publisher.emit(
                job_error(
                    job,
                    user,
                    f"the result of task {task_id} is not JSON: {exc}",
                    exception_type=type(exc).__name__,
                )
            )
            return

    def member_done(client: SyncRedis) -> None:
        agg = Aggregate.parse(
            _script(
                client,
                _DONE_LUA,
                [part.canvas(job)],
                [
                    member.index,
                    member.weight,
                    member.total_weight,
                    member.members,
                    "1" if member.keep else "0",
                    encoded,
                    now_ms(),
                    retention,
                ],
            )
        )
        if agg.seq:
            message = f"{agg.done} of {member.members} tasks done"
            publisher.emit(_progress_event(job, user, agg, message, {}))
        if agg.complete:
            combined = assemble(member.result, agg.results or {})
            publisher.emit(job_completed(job, user, result_payload(combined, limit)))
            log.info("canvas job completed", extra={"job": job, "members": member.members})

    publisher.call(member_done, terminal=True)
