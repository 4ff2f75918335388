"""A task's ``PROGRESS`` state for Celery: the result backend (``AsyncResult``) and the
``task-progress`` event (Flower).

When the result backend is Celery's Redis backend on jobcast's own Redis (the bundled
app's default) and stores JSON, the state is written in the same pipeline as the progress
event (:func:`redis_write`; ``workers.publisher.Publisher.emit_progress``), as the backend
would write it (the same key, value, expiry and ``PUBLISH``), by a small script that, like
the backend, never overwrites a ``SUCCESS``. Otherwise the backend writes it itself
(:func:`store`). The Flower event is sent by the process's publisher thread
(:func:`flower_event`): a lost one is only a monitor missing one step.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.backends.base import DisabledBackend
from celery.backends.redis import RedisBackend

log = logging.getLogger(__name__)

#: Celery's own state for a task that reports progress.
PROGRESS = "PROGRESS"

#: Writes a task's meta as ``RedisBackend._set`` does (SETEX or SET, then PUBLISH on the
#: key), unless the task's stored state is already SUCCESS (``_store_result``'s guard).
STATE_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class StateWrite:
    """The backend's write of a task's state, for a pipeline on jobcast's Redis."""

    key: str
    value: str
    expires: int


def _address(kwargs: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(kwargs.get(k) for k in ("host", "port", "db", "path", "username", "password"))


_SAME: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def shares_redis(backend: Any, client: Any) -> bool:
    """Whether ``backend`` is Celery's plain Redis backend, storing JSON, on the server
    and database of ``client`` (jobcast's; a Sentinel or cluster client never is)."""
    same = _SAME.get(backend)
    if same is None:
        same = False
        if type(backend) is RedisBackend and getattr(backend, "serializer", None) == "json":
            pool = getattr(client, "connection_pool", None)
            mine = getattr(pool, "connection_kwargs", None)
            theirs = getattr(backend, "connparams", None)
            if isinstance(mine, dict) and isinstance(theirs, dict) and "port" in mine:
                defaults = {"db": 0, "username": None, "password": None}
                same = _address({**defaults, **mine}) == _address({**defaults, **theirs})
        _SAME[backend] = same
    return same


def redis_write(task: Any, request: Any, meta: dict[str, Any], client: Any) -> StateWrite | None:
    """The backend's write of ``PROGRESS`` with ``meta`` for the task, when the backend is
    on ``client``'s Redis (:func:`shares_redis`); None when the backend must write it."""
    backend = task.backend
    if not shares_redis(backend, client):
        return None
    full = backend._get_result_meta(result=meta, state=PROGRESS, traceback=None, request=request)
    full["task_id"] = request.id
    value = backend.encode(full)
    if len(value) > backend._MAX_STR_VALUE_SIZE:
        return None  # the backend refuses it with its own error
    return StateWrite(backend.get_key_for_task(request.id), value, int(backend.expires or 0))


def store(task: Any, meta: dict[str, Any]) -> None:
    """The backend writes ``PROGRESS`` itself (another server, another serializer)."""
    if not isinstance(task.backend, DisabledBackend):  # an app without a result backend
        task.update_state(state=PROGRESS, meta=meta)


def flower_event(task: Any, request: Any, meta: dict[str, Any]) -> Callable[[], None]:
    """Sends the ``task-progress`` event of the task's current request (Flower shows a
    custom state only with it), from whatever thread calls it."""
    app, task_id, hostname = task.app, request.id, request.hostname

    def send_task_progress() -> None:
        with app.events.default_dispatcher(hostname=hostname) as dispatcher:
            dispatcher.send("task-progress", uuid=task_id, retry=False, **meta)

    return send_task_progress
