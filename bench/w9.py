"""W9 (issue 19): the worker-side cost of live output — ``stream()`` against ``report()``.

A micro-benchmark in one process, against a ``redis-server`` of its own: a tracked run
(the :class:`workers.tracking.Run` the ``task_prerun`` signal makes, writing through the
real publisher to that Redis) is fed ``--calls`` texts of 10 characters in a tight loop
(``Run.stream``, what ``workers.progress.stream`` calls), then as many progress values
(``workers.progress.progress_step``: the event built and ``Run.progress``, what
``report()`` does before Celery's ``update_state``, which it adds only for the reports
that go out). Per call: the mean time of each; the chunks and progress events that went
to Redis (one script call each); and whether the job's output in Redis is exactly the
text streamed. Repeated ``--repeats`` times, each on a job of its own.

Not part of ``bench/run.sh``'s comparison (no other server has live output); run it alone:

    .venv/bin/python -m bench.w9 [--calls 100000] [--repeats 3]

The Celery task of the test suite that does the same inside a real worker
(``tests/integration/delivery/test_output.py``, 100,000 calls) prints its own figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.servers import PROCS, RedisServer, log

TEXT = "0123456789"


def run_once(calls: int, index: int) -> dict[str, Any]:
    """One run on a job of its own: per-call times, what reached Redis, exactness."""
    from notifier.contract.events import QUEUED, status_update
    from notifier.contract.keys import keyspace
    from notifier.contract.settings import get_settings
    from workers import publisher
    from workers.progress import progress_step
    from workers.tracking import Run

    settings = get_settings()
    user, job = f"w9-user-{index}", f"w9-job-{index}"
    publisher.emit(status_update(job, user, QUEUED, progress=0))
    interval = settings.progress_min_interval_ms / 1000
    run = Run(
        job,
        user,
        0,
        interval,
        publisher.emit,
        output=publisher.output_sink(job, user),
        output_limit=settings.output_max_bytes,
    )
    client = publisher._current().client
    part = keyspace(settings.partitions).of_user(user)
    before = int(client.xlen(part.events))

    started = time.perf_counter()
    for _ in range(calls):
        run.stream(TEXT)
    streaming = time.perf_counter() - started
    run.flush_output(final=True)
    chunks = int(client.xlen(part.events)) - before

    started = time.perf_counter()
    for n in range(calls):
        progress_step(run, 100 * n / calls, "reporting", {})
    reporting = time.perf_counter() - started
    run.flush(final=True)
    reports = int(client.xlen(part.events)) - before - chunks

    output = client.get(part.job_output(job)) or ""
    return {
        "stream_us": streaming / calls * 1e6,
        "report_us": reporting / calls * 1e6,
        "chunks": chunks,
        "progress_events": reports,
        "exact": output == TEXT * calls,
        "seconds": streaming,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.w9", description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="jobcast-w9-"))
    redis = RedisServer(workdir)
    try:
        redis.start()
        os.environ["REDIS_URL"] = redis.url  # before jobcast reads its settings
        from notifier.contract.settings import get_settings

        get_settings.cache_clear()
        log(f"W9: {args.repeats} x {args.calls} calls of {len(TEXT)} characters, Redis {redis.url}")
        runs = [run_once(args.calls, i) for i in range(args.repeats)]
    finally:
        PROCS.stop_all()
    print(
        "| run | stream() us/call | report() us/call | chunks written | progress events | exact |"
    )
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(runs, 1):
        print(
            f"| {i} | {r['stream_us']:.2f} | {r['report_us']:.2f} | {r['chunks']} "
            f"| {r['progress_events']} | {'yes' if r['exact'] else 'NO'} |"
        )
    print(
        f"| median | {statistics.median(r['stream_us'] for r in runs):.2f} "
        f"| {statistics.median(r['report_us'] for r in runs):.2f} | | | |"
    )
    return 0 if all(r["exact"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
