"""W9's Celery worker: the bundled app (``workers.app``, as ``make worker`` runs it) plus one
task, ``bench.w9.report_loop``, that calls ``workers.progress.report()`` as fast as it can
for a given time and measures each call on the task's own thread.

    celery -A bench.w9_worker worker -c 1 -P prefork -Q bench-w9

The worker counts, per thread, what redis-py sends (``Connection.send_packed_command``: one
per command, one per pipeline; kombu's Redis transport goes through it too): the task's
thread's sends during emitted calls are its Redis round trips. A call is counted as
*emitted* when the run sent an event during it (``Run.sent`` moved;
in a checkout from before that counter, the time of the run's last send), else as
*coalesced*. The task returns the medians and a few percentiles of both, in
microseconds, and how many calls of each there were. Run by ``python -m bench.w9
--worker``; not a test.
"""

from __future__ import annotations

import statistics
import threading
import time
from array import array
from collections import Counter
from typing import Any

from redis.connection import AbstractConnection

from workers.app import app
from workers.progress import report
from workers.tracking import RUNS

QUEUE = "bench-w9"

#: redis-py sends per thread id.
SENDS: Counter[int] = Counter()
_send_packed_command = AbstractConnection.send_packed_command


def _counted_send(self: Any, *args: Any, **kwargs: Any) -> Any:
    SENDS[threading.get_ident()] += 1
    return _send_packed_command(self, *args, **kwargs)


AbstractConnection.send_packed_command = _counted_send  # type: ignore[method-assign]


def _summary(samples: array[int]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return {
        "n": len(ordered),
        "median_us": statistics.median(ordered) / 1000,
        "mean_us": sum(ordered) / len(ordered) / 1000,
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "max_us": ordered[-1] / 1000,
    }


def _sends(run: Any) -> Any:
    """What changes each time ``run`` sends an event."""
    if run is None:
        return None
    sent = getattr(run, "sent", None)
    return run._last_sent if sent is None else sent


@app.task(bind=True, name="bench.w9.report_loop", queue=QUEUE)
def report_loop(self: Any, seconds: float = 10.0) -> dict[str, Any]:
    """``report()`` in a tight loop for ``seconds``: progress rising from 0 to 99.99 with a
    message and one extra field, then a last ``report(100)``."""
    run = RUNS.get(self.request.id)
    coalesced: array[int] = array("q")
    emitted: array[int] = array("q")
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    span = seconds * 1e9
    started = clock()
    sent = _sends(run)
    me = threading.get_ident()
    writes = SENDS[me]
    emitted_writes = coalesced_writes = 0
    now = started
    while now < end:
        value = 99.99 * (now - started) / span
        t0 = clock()
        report(value, "Writing", section=3)
        now = clock()
        after, written = _sends(run), SENDS[me]
        if after != sent:
            emitted.append(now - t0)
            emitted_writes += written - writes
        else:
            coalesced.append(now - t0)
            coalesced_writes += written - writes
        sent, writes = after, written
    report(100, "Done")
    return {
        "seconds": (clock() - started) / 1e9,
        "calls": len(coalesced) + len(emitted),
        "coalesced": _summary(coalesced),
        "emitted": _summary(emitted),
        "tracked": run is not None,
        "writes_per_emit": emitted_writes / max(1, len(emitted)),
        "writes_coalesced": coalesced_writes,
    }
