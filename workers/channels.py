"""``notify()``: a message to the subscribers of a channel, from any process.

    import workers

    workers.notify("ops", "Nightly import failed", level="error", rows=1200)
    workers.notify("notifications", "New reports are available")

Works in a Celery task or in any other Python process (a script, a web app). Like
``report()``, it never raises into the caller: a bad argument (unknown channel or level,
an empty or too long message, ``data`` that is not JSON or too big) is logged as an error
and nothing is sent. While Redis is unreachable the message waits, in order, in the
process's bounded backlog of outcomes (``workers.publisher``), and goes out once Redis
answers. Importing this module creates no Celery app and opens no connection.
"""

from __future__ import annotations

import logging
from typing import Any

from notifier.contract.events import Event, channel_message
from notifier.contract.keys import keyspace
from notifier.core.bus import SyncRedis, fan_out_sync
from workers import publisher

log = logging.getLogger(__name__)


def notify(channel: str, message: str, level: str = "info", **data: Any) -> str | None:
    """Send ``message`` (with ``level`` and the keyword arguments as ``data``) to the
    subscribers of ``channel`` (``notifications``, ``maintenance`` or ``ops``).

    Returns the message's ``eventId`` (each partition's copy has its own; this is
    partition 0's), or None when it was refused (logged), is waiting
    for Redis, or could not be sent. Never raises.
    """
    try:
        event = channel_message(channel, message, level, data)
    except (TypeError, ValueError) as exc:
        log.error("notify() refused; nothing sent: %s", exc, extra={"channel": str(channel)[:64]})
        return None
    except Exception:
        log.exception("notify() failed; nothing sent")
        return None
    return publisher.call(_Publish(event), terminal=True)


class _Publish:
    """The publish of one channel message, as a backlog item (named in the logs). It goes to
    every partition; a retry after Redis failed midway skips those already written."""

    __slots__ = ("__name__", "done", "event")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.done: dict[int, str | None] = {}
        self.__name__ = f"notify:{event.channel}"

    def __call__(self, client: SyncRedis) -> str | None:
        done = fan_out_sync(client, self.event, publisher.settings(), self.done)
        return done[keyspace(publisher.settings().partitions).index_of(self.event.user_id)]
