"""Publishing from Celery processes: one lazily created Redis client per process.

Nothing here raises into a task or into Celery. While Redis is unreachable, progress is
dropped (best effort, and without waiting on Redis for every ``report()``), and terminal
events wait in a bounded per-process backlog that a background thread retries, in
order, until Redis answers again. The same thread renews the leases of the jobs running
in this process, so a job whose worker dies silently is reaped as ``worker_lost``, and
does the best-effort work a task's thread should not wait for (:meth:`Publisher.later`:
Flower's ``task-progress`` events).

A progress event that goes out from the task's thread is one pipelined write
(:meth:`Publisher.emit_progress`): the publish script's call and, when Celery's result
backend is this same Redis, the task's ``PROGRESS`` state (``workers.celery_state``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from notifier.contract import keys
from notifier.contract.events import Event, now_ms
from notifier.contract.keys import keyspace
from notifier.contract.settings import Settings, get_settings
from notifier.core import bus
from notifier.core.bus import SyncRedis, append_output_sync, publish_sync, sync_client
from workers.celery_state import STATE_LUA, StateWrite

log = logging.getLogger(__name__)


T = TypeVar("T")
#: A step of a terminal outcome that is more than one event (a canvas member finishing):
#: it runs with the process's client, raises while Redis is away, and is safe to repeat.
Action = Callable[[SyncRedis], object]

#: Best-effort work waiting for the publisher thread, at most this many (oldest dropped).
LATER_MAX = 1000


def settings() -> Settings:
    return get_settings()


class Publisher:
    """The publishing state of one process (recreated after a fork)."""

    def __init__(self, config: Settings, running_jobs: Callable[[], list[tuple[str, str]]]) -> None:
        self.config = config
        self.client: SyncRedis = sync_client(config)
        self._running_jobs = running_jobs
        self._backlog: deque[Event | Action] = deque()
        self._later: deque[Callable[[], object]] = deque(maxlen=LATER_MAX)
        self._shas: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._down_until = 0.0
        self._failures = 0
        self._thread = threading.Thread(target=self._loop, name="jobcast-publisher", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> str | None:
        terminal = event.terminal
        with self._lock:
            if terminal and self._backlog:  # keep terminal events in order behind the backlog
                self._buffer(event)
                return None
        if not terminal and time.monotonic() < self._down_until:
            return None  # Redis was just unreachable: progress is best effort
        try:
            event_id = publish_sync(self.client, event, self.config)
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            if terminal:
                with self._lock:
                    self._buffer(event)
            else:
                log.warning(
                    "progress not published: Redis unavailable",
                    extra={"job": event.job_id, "error": str(exc)},
                )
            return None
        self._failures = 0
        return event_id

    def emit_progress(self, event: Event, state: StateWrite | None = None) -> str | None:
        """Publish a progress event (never terminal) from a task's thread, with ``state``
        (the task's PROGRESS state for Celery's result backend on this Redis) in the same
        pipeline: one round trip. A step the hot path hands back (``bus.declined``: the
        job's lease is due) takes a second one, the full script's, as in
        :func:`bus.publish_sync`. Best effort: nothing is tried while Redis was just
        unreachable."""
        if time.monotonic() < self._down_until:
            return None
        part = keyspace(self.config.partitions).of_user(event.user_id)
        call = bus.publish_call(part, event, self.config)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                if bus.records_owner(event):  # as publish_sync: a change of state
                    pipe.set(
                        keys.job_owner(event.job_id),
                        event.user_id,
                        ex=self.config.retention_seconds,
                    )
                at = len(pipe)
                self._evalsha(pipe, call.source, call.keys, call.args)
                if state is not None:
                    self._evalsha(pipe, STATE_LUA, [state.key], [state.value, state.expires])
                replies = pipe.execute(raise_on_error=False)
            raw = self._replied(replies, at, call.source, call.keys, call.args)
            if state is not None:
                self._replied(replies, at + 1, STATE_LUA, [state.key], [state.value, state.expires])
            if bus.declined(raw):  # the full script, on its own
                call = bus.full_call(part, event, self.config)
                raw = bus.bound_script(self.client, call.source)(keys=call.keys, args=call.args)
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            log.warning(
                "progress not published: Redis unavailable",
                extra={"job": event.job_id, "error": str(exc)},
            )
            return None
        self._failures = 0
        return None if raw is None else bus.text(raw)

    def _evalsha(self, pipe: Any, source: str, keys: list[Any], args: list[Any]) -> None:
        # Scripts loaded once per process: a pipeline of redis-py Script calls would first
        # ask SCRIPT EXISTS, one more round trip each time.
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = str(self.client.script_load(source))
        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)

    def _replied(
        self, replies: list[Any], at: int, source: str, keys: list[Any], args: list[Any]
    ) -> Any:
        """The reply of the script call at ``at``: raised if it is an error; run again on
        its own if Redis did not know the script (restarted, flushed)."""
        raw = replies[at]
        if isinstance(raw, redis.exceptions.NoScriptError):
            self._shas.pop(source, None)
            return bus.bound_script(self.client, source)(keys=keys, args=args)
        if isinstance(raw, Exception):
            raise raw
        for reply in replies[:at]:  # the owner index, written before it
            if isinstance(reply, Exception):
                raise reply
        return raw

    def later(self, work: Callable[[], object]) -> None:
        """Have the publisher thread do ``work`` (best effort: errors are logged; past
        :data:`LATER_MAX` waiting, the oldest is dropped)."""
        self._later.append(work)
        self._wake.set()

    def _run_later(self) -> None:
        while self._later:
            try:
                work = self._later.popleft()
            except IndexError:
                return
            try:
                work()
            except Exception as exc:
                log.warning(
                    "best-effort work failed",
                    extra={"work": getattr(work, "__name__", repr(work)), "error": str(exc)},
                )

    def call(self, action: Callable[[SyncRedis], T], *, terminal: bool) -> T | None:
        """Run ``action`` with this process's client. Best effort unless ``terminal``: then,
        if Redis does not answer (or earlier outcomes still wait), it waits in the backlog
        and the background thread runs it, in order, once Redis answers."""
        if terminal:
            with self._lock:
                if self._backlog:
                    self._buffer(action)
                    return None
        elif time.monotonic() < self._down_until:
            return None
        try:
            result = action(self.client)
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            if terminal:
                with self._lock:
                    self._buffer(action)
            else:
                log.warning("progress not published: Redis unavailable", extra={"error": str(exc)})
            return None
        self._failures = 0
        return result

    def _buffer(self, item: Event | Action) -> None:
        if len(self._backlog) >= self.config.terminal_buffer_events:
            dropped = self._backlog.popleft()
            log.error("terminal event backlog full; oldest dropped", extra=_describe(dropped))
        self._backlog.append(item)
        log.warning(
            "terminal event buffered until Redis answers",
            extra={**_describe(item), "backlog": len(self._backlog)},
        )
        self._wake.set()

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        self._down_until = time.monotonic() + min(5.0, 0.25 * 2**self._failures)

    def _flush(self) -> None:
        while True:
            with self._lock:
                if not self._backlog:
                    return
                item = self._backlog[0]
            # Both raise while Redis is away; the item stays first in the backlog.
            if isinstance(item, Event):
                publish_sync(self.client, item, self.config)
            else:
                item(self.client)
            with self._lock:
                if self._backlog and self._backlog[0] is item:
                    self._backlog.popleft()
            log.info("buffered terminal event published", extra=_describe(item))

    def _renew(self) -> None:
        jobs = self._running_jobs()
        if not jobs:
            return
        expiry = now_ms() + int(self.config.job_lease_seconds * 1000)
        space = keyspace(self.config.partitions)
        by_partition: dict[str, dict[str, int]] = {}
        for job, user in jobs:
            by_partition.setdefault(space.of_user(user).running, {})[job] = expiry
        with self.client.pipeline(transaction=False) as pipe:
            for running, leases in by_partition.items():
                pipe.zadd(running, leases, xx=True)
            pipe.execute()

    def _loop(self) -> None:
        period = self.config.job_lease_seconds / 3
        delay = 0.25
        renew_at = 0.0
        while True:
            now = time.monotonic()
            timeout = min(renew_at - now, delay) if self._backlog else renew_at - now
            self._wake.wait(timeout=max(0.0, timeout))
            self._wake.clear()
            self._run_later()
            try:
                self._flush()
                if time.monotonic() >= renew_at:
                    self._renew()
                    renew_at = time.monotonic() + period
                delay = 0.25
            except (redis.RedisError, OSError) as exc:
                self._failed(exc)
                delay = min(5.0, delay * 2)
                log.warning(
                    "Redis unavailable; retrying",
                    extra={"backlog": len(self._backlog), "retry_in_s": delay, "error": str(exc)},
                )
            except Exception:
                log.exception("publisher thread error")


def _describe(item: Event | Action) -> dict[str, str]:
    if isinstance(item, Event):
        return {"job": item.job_id, "type": item.type}
    return {"action": getattr(item, "__name__", repr(item))}


_lock = threading.Lock()
_publisher: Publisher | None = None
_publisher_pid: int | None = None


def _current() -> Publisher:
    global _publisher, _publisher_pid
    pid = os.getpid()
    if _publisher is None or _publisher_pid != pid:
        with _lock:
            if _publisher is None or _publisher_pid != pid:
                from workers.tracking import RUNS

                _publisher = Publisher(settings(), RUNS.jobs)
                _publisher_pid = pid
    return _publisher


def emit(event: Event) -> str | None:
    """Append one event; returns its id, or None if it was dropped, deferred or failed."""
    try:
        return _current().emit(event)
    except Exception:
        log.exception("event not published", extra={"job": event.job_id, "type": event.type})
        return None


def client() -> SyncRedis:
    """This process's Redis client (created on first use; no connection until used)."""
    return _current().client


def emit_progress(event: Event, state: StateWrite | None = None) -> str | None:
    """Publish a progress event from a task's thread with ``state`` in the same pipeline
    (see :meth:`Publisher.emit_progress`). Never raises."""
    try:
        return _current().emit_progress(event, state)
    except Exception:
        log.exception("event not published", extra={"job": event.job_id, "type": event.type})
        return None


def later(work: Callable[[], object]) -> None:
    """Hand best-effort ``work`` to the process's publisher thread (never raises)."""
    try:
        _current().later(work)
    except Exception:
        log.exception("best-effort work dropped")


def call(action: Callable[[SyncRedis], T], *, terminal: bool = False) -> T | None:
    """Run ``action`` with the process's Redis client (see :meth:`Publisher.call`); None if
    it was skipped, deferred or failed. Never raises."""
    try:
        return _current().call(action, terminal=terminal)
    except Exception:
        log.exception("Redis action failed", extra=_describe(action))
        return None


def output_sink(job_id: str, user_id: str) -> Callable[[str, bool], bool | None]:
    """The writer of a run's live output (``workers.tracking.OutputSink``): one script call
    per chunk. A chunk that Redis does not take is reported (None) so the run holds it;
    the final one (``final``: the job's outcome follows) waits in the terminal backlog,
    in order before that outcome."""

    def write(text: str, final: bool) -> bool | None:
        def append_output(client: SyncRedis) -> bool:
            return not append_output_sync(client, job_id, user_id, text, settings()).closed

        return call(append_output, terminal=final)

    return write


def job_of(task_id: str) -> tuple[str, str] | None:
    """``(job_id, owner)`` of a task from Redis, for signals sent without the task's headers
    (a dead child, a rejection): a canvas member's job is recorded under its task id, a
    plain task's job id is its task id."""
    try:
        client = _current().client
        job = client.get(keys.task_job(task_id)) or task_id
        owner = client.get(keys.job_owner(str(job)))
    except (redis.RedisError, OSError) as exc:
        log.warning("job owner lookup failed", extra={"task": task_id, "error": str(exc)})
        return None
    return (str(job), str(owner)) if owner else None
