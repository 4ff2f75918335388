"""Canvas jobs, worker side: one progress, one ``started``, one outcome for the canvas.

Lua scripts keyed by the canvas job (``keys.canvas``) keep each member's progress (its
highest; a finished member counts 100), fold it into a weighted mean that never goes down,
estimate the time left from it, and number the canvas's events with one sequence for all
members, so the bus keeps them in order whichever worker sends them. The member whose
success finishes the canvas publishes ``job_completed`` with the canvas's result (a group:
its members' results in order; a chain: its last task's; a chord: its body's). The scripts
also keep the job's lease in the running set while any member runs, and drop it while the
canvas waits in the queue between members.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from notifier.contract import keys
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
from workers import publisher
from workers.tracking import Member

log = logging.getLogger(__name__)


# Folds the canvas's sum of weighted member progress into the aggregate (never lower than
# before), updates its ETA and numbers the event that will carry it. The ETA smooths the
# aggregate's rate as workers.tracking.EtaEstimator does, but samples it over at least
# ETA_WINDOW_MS: members running side by side report in bursts, and a burst's rate over a
# few milliseconds says nothing about the time left.
#
# Numbering: the canvas's first member to start numbers the canvas's ``started`` 1 and
# publishes it; until it says it has (``announced``), other members' updates get no number
# (seq 0: not published; the aggregate keeps their progress), or the bus would drop the
# ``started`` that reached it after them. Should that member never say so, numbering resumes
# ANNOUNCE_MS after it started.
ETA_WINDOW_MS = 500
ANNOUNCE_MS = 2000
_AGGREGATE = f"""
local WINDOW, ANNOUNCE = {ETA_WINDOW_MS}, {ANNOUNCE_MS}
local function next_seq(key, now)
  local st = redis.call('HMGET', key, 'announced', 'startedAt')
  if not st[1] and st[2] and now - tonumber(st[2]) < ANNOUNCE then return 0 end
  return redis.call('HINCRBY', key, 'seq', 1)
end
local function aggregate(key, total, complete, now, retention)
  local agg = 100
  if not complete then
    local sum = tonumber(redis.call('HGET', key, 'sum') or '0')
    agg = math.floor(math.min(100, sum / total) * 100) / 100
  end
  local prev = tonumber(redis.call('HGET', key, 'agg') or '0')
  if agg < prev then agg = prev end
  redis.call('HSET', key, 'agg', tostring(agg))
  local eta = nil
  if agg >= 100 then
    eta = 0
  else
    local st = redis.call('HMGET', key, 'etaT', 'etaP', 'etaR')
    local rate = tonumber(st[3])
    if not st[1] then
      redis.call('HSET', key, 'etaT', now, 'etaP', tostring(agg))
    else
      local t0, p0 = tonumber(st[1]), tonumber(st[2])
      if now - t0 >= WINDOW and agg >= p0 then
        local r = (agg - p0) / ((now - t0) / 1000)
        if rate then rate = 0.3 * r + 0.7 * rate else rate = r end
        redis.call('HSET', key, 'etaT', now, 'etaP', tostring(agg), 'etaR', tostring(rate))
      end
    end
    if rate and rate > 0 then
      eta = math.floor(math.max(0, (100 - agg) / rate) * 10 + 0.5) / 10
    end
  end
  local seq = next_seq(key, now)
  redis.call('EXPIRE', key, retention)
  return agg, eta, seq
end
local function member_progress(key, index, weight, progress)
  local field = 'p:' .. index
  local old = tonumber(redis.call('HGET', key, field) or '0')
  if progress > old then
    redis.call('HSET', key, field, tostring(progress))
    redis.call('HINCRBYFLOAT', key, 'sum', tostring((progress - old) * weight))
  end
end
"""

# KEYS: 1 canvas; ARGV: 1 index, 2 weight, 3 total weight, 4 progress, 5 now ms, 6 retention s
_PROGRESS_LUA = (
    _AGGREGATE
    + """
member_progress(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4]))
local agg, eta, seq = aggregate(KEYS[1], tonumber(ARGV[3]), false, tonumber(ARGV[5]), ARGV[6])
return cjson.encode({agg = agg, eta = eta, seq = seq})
"""
)

# KEYS: 1 canvas; ARGV: 1 index, 2 weight, 3 total weight, 4 members, 5 keep ('1'/'0'),
#       6 result JSON, 7 now ms, 8 retention s.
# A member counts once however often it reports success (a redelivered task); the canvas is
# complete for the one member whose success completed it, which gets the members' results.
_DONE_LUA = (
    _AGGREGATE
    + """
local key, index, members = KEYS[1], ARGV[1], tonumber(ARGV[4])
member_progress(key, index, tonumber(ARGV[2]), 100)
if ARGV[5] == '1' then redis.call('HSET', key, 'r:' .. index, ARGV[6]) end
local done
if redis.call('HSETNX', key, 'd:' .. index, '1') == 1 then
  done = redis.call('HINCRBY', key, 'done', 1)
else
  done = tonumber(redis.call('HGET', key, 'done') or '0')
end
local complete = false
if done >= members then
  redis.call('HSETNX', key, 'complete', index)
  complete = redis.call('HGET', key, 'complete') == index
end
local agg, eta, seq = aggregate(key, tonumber(ARGV[3]), done >= members, tonumber(ARGV[7]), ARGV[8])
local out = {agg = agg, eta = eta, seq = seq, done = done, complete = complete}
if complete then
  local results = {}
  for j = 0, members - 1 do
    local r = redis.call('HGET', key, 'r:' .. j)
    if r then results[tostring(j)] = r end
  end
  out['results'] = results
end
return cjson.encode(out)
"""
)

# KEYS: 1 canvas; ARGV: 1 now ms, 2 retention s. The number of a status change (retrying).
_SEQ_LUA = (
    _AGGREGATE
    + """
local seq = next_seq(KEYS[1], tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return seq
"""
)

# KEYS: 1 canvas, 2 the member's task -> job key, 3 job hash, 4 running set
# ARGV: 1 job, 2 task id, 3 now ms, 4 lease ms, 5 retention s
# Returns the seq of the canvas's ``started`` event for its first member to start, else 0.
_START_LUA = """
local first = redis.call('HSETNX', KEYS[1], 'started', ARGV[2]) == 1
redis.call('HINCRBY', KEYS[1], 'running', 1)
local seq = 0
if first then
  redis.call('HSET', KEYS[1], 'startedAt', ARGV[3])
  seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[5])
if redis.call('HEXISTS', KEYS[3], 'terminal') == 0 then
  redis.call('ZADD', KEYS[4], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
end
return seq
"""

# KEYS: 1 canvas, 2 job hash, 3 running set; ARGV: 1 job, 2 now ms, 3 lease ms, 4 retention s
# A member's run ended: while others run the job keeps its lease; when none does, the canvas
# waits in the queue (between chain steps, for a retry) and holds none.
_END_LUA = """
local running = redis.call('HINCRBY', KEYS[1], 'running', -1)
if running < 0 then
  redis.call('HSET', KEYS[1], 'running', 0)
  running = 0
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if running == 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
elseif redis.call('HEXISTS', KEYS[2], 'terminal') == 0 then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
end
return running
"""


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


def _script(client: redis.Redis, source: str, script_keys: list[str], args: list[Any]) -> Any:
    return client.register_script(source)(keys=script_keys, args=args)


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

    def action(client: redis.Redis) -> int:
        return int(
            _script(
                client,
                _START_LUA,
                [keys.canvas(job), keys.task_job(task_id), keys.job(job), keys.RUNNING],
                [job, task_id, now_ms(), lease, retention],
            )
        )

    seq = publisher.call(action)
    if seq:
        publisher.emit(status_update(job, user, STARTED, message="Started", seq=seq))
        publisher.call(lambda client: client.hset(keys.canvas(job), "announced", "1"))


def ended(job: str) -> None:
    """A member's run ended (task_postrun), whatever its outcome."""
    lease, retention = _lease_args()

    def action(client: redis.Redis) -> object:
        return _script(
            client,
            _END_LUA,
            [keys.canvas(job), keys.job(job), keys.RUNNING],
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

        def action(client: redis.Redis) -> Aggregate:
            return Aggregate.parse(
                _script(
                    client,
                    _PROGRESS_LUA,
                    [keys.canvas(job)],
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

    def action(client: redis.Redis) -> int:
        return int(_script(client, _SEQ_LUA, [keys.canvas(job)], [now_ms(), retention]))

    seq = publisher.call(action)
    publisher.emit(
        retrying(job, user, retry, retry_in_seconds=retry_in_seconds, message=message, seq=seq or 0)
    )


def succeeded(job: str, user: str, member: Member, task_id: str, result: Any) -> None:
    """A member succeeded (task_success): it counts 100, and the member that completes the
    canvas publishes ``job_completed``. Kept until Redis answers, like any outcome."""
    limit = publisher.settings().result_max_bytes
    _, retention = _lease_args()
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

    def member_done(client: redis.Redis) -> None:
        agg = Aggregate.parse(
            _script(
                client,
                _DONE_LUA,
                [keys.canvas(job)],
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
