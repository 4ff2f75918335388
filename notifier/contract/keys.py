"""Every Redis key jobcast uses. No other module spells a ``jobcast:`` string."""

from __future__ import annotations

PREFIX = "jobcast"

#: The one event stream: job events, broadcasts and channel messages. Every notifier
#: instance reads all of it from its own last id (fan-out, not a consumer group).
EVENTS = f"{PREFIX}:events"
#: Broadcasts and channel messages, with the same ids as in EVENTS (for replay).
BROADCASTS = f"{PREFIX}:broadcasts"
#: Sorted set of started jobs scored by the expiry (ms) of their run's lease; a job whose
#: lease lapsed (its worker died silently) is reaped as ``worker_lost``.
RUNNING = f"{PREFIX}:running"
#: Lock so that one notifier instance at a time sweeps RUNNING.
REAPER_LOCK = f"{PREFIX}:reaper"


def job(job_id: str) -> str:
    """Hash holding a job's owner, current state and terminal message."""
    return f"{PREFIX}:job:{job_id}"


def user_jobs(user_id: str) -> str:
    """Sorted set of a user's job ids, scored by creation time (ms)."""
    return f"{PREFIX}:user:{user_id}:jobs"


def user_inbox(user_id: str) -> str:
    """Stream of the events addressed to one user (terminal job events), same ids as EVENTS."""
    return f"{PREFIX}:user:{user_id}:inbox"


def user_channel_events(user_id: str) -> str:
    """Sorted set of the ids of the channel messages dispatched while one of the user's
    connections was subscribed to their channel (and of the other users' ``job_error``
    events the user got through ``ops``), scored by time (ms): the only channel messages a
    replay gives the user, and the foreign ids that are valid ``lastEventId`` values."""
    return f"{PREFIX}:user:{user_id}:channel-events"


def job_events(job_id: str) -> str:
    """Stream of one job's events, same ids as EVENTS (REST catch-up)."""
    return f"{PREFIX}:job:{job_id}:events"


def user_connections(user_id: str) -> str:
    """Set of a user's open connections (``instance|conn``); one counts while its instance
    holds a live lease in INSTANCES."""
    return f"{PREFIX}:user:{user_id}:conns"


def user_cursor(user_id: str) -> str:
    """Hash: ``acked`` (the user's ``ack`` cursor) and ``seen`` (delivered live up to)."""
    return f"{PREFIX}:user:{user_id}:cursor"


#: Sorted set of live notifier instances scored by the expiry (ms) of their lease.
INSTANCES = f"{PREFIX}:instances"


def instance_stats(instance_id: str) -> str:
    """Hash of one notifier instance's figures (connections, subscriptions, deliveries)."""
    return f"{PREFIX}:instance:{instance_id}:stats"


def instance_users(instance_id: str) -> str:
    """Set of the user ids connected to one notifier instance."""
    return f"{PREFIX}:instance:{instance_id}:users"


def canvas(job_id: str) -> str:
    """Hash of a canvas job's aggregate: member task ids, per-member progress and results,
    counters (done, running, seq) and the aggregate's ETA state."""
    return f"{PREFIX}:canvas:{job_id}"


def task_job(task_id: str) -> str:
    """String: the canvas job a member task belongs to (for signals sent without headers)."""
    return f"{PREFIX}:task:{task_id}:job"
