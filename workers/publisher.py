"""Publishing from Celery processes: one lazily created Redis client per process.

Nothing here raises into a task or into Celery: a publish that fails is logged and
dropped (progress is best-effort while Redis is away).
"""

from __future__ import annotations

import logging
import os
import threading

import redis

from notifier import keys
from notifier.bus import publish_sync, sync_client
from notifier.events import Event
from notifier.settings import Settings, get_settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_client: redis.Redis | None = None
_client_pid: int | None = None


def settings() -> Settings:
    return get_settings()


def client() -> redis.Redis:
    """This process's client, created on first use and again after a fork."""
    global _client, _client_pid
    pid = os.getpid()
    if _client is None or _client_pid != pid:
        with _lock:
            if _client is None or _client_pid != pid:
                _client = sync_client(settings())
                _client_pid = pid
    return _client


def emit(event: Event) -> str | None:
    """Append one event; returns its id, or None if it was dropped or Redis failed."""
    try:
        return publish_sync(client(), event, settings())
    except (redis.RedisError, OSError) as exc:
        log.warning(
            "event not published: Redis unavailable",
            extra={"job": event.job_id, "type": event.type, "error": str(exc)},
        )
    except Exception:
        log.exception("event not published", extra={"job": event.job_id, "type": event.type})
    return None


def owner_of(job_id: str) -> str | None:
    """The owner of a job, from its state in Redis (for signals sent outside the task)."""
    try:
        owner = client().hget(keys.job(job_id), "owner")
    except (redis.RedisError, OSError) as exc:
        log.warning("job owner lookup failed", extra={"job": job_id, "error": str(exc)})
        return None
    return str(owner) if owner else None
