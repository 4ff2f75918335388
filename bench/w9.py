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

``--worker`` (issue 18, producer cost): a real Celery worker (``bench/w9_worker.py``: the
bundled app plus one task, ``-c 1 -P prefork``) runs a task that calls ``report()`` as
fast as it can for ``--seconds`` (10), timing every call on the task's thread. Printed per
run: calls, the median (and p99) time of a coalesced call and of a call that emitted, the
Redis writes the task's thread made per emitted call (redis-py sends, a pipeline being one;
kombu's too), the progress events a live ``XREAD`` reader of the partition stream saw
(what a notifier reads before it pushes to clients), per second of the task, and how many
the job's history holds (capped by the stream's length limit).
``--baseline DIR`` runs the same task, alternately, from another checkout (a ``git
worktree`` of the commit before a change; ``bench/w9_worker.py`` is copied into it), on
the same Redis, so that before and after come from the same run:

    git worktree add /tmp/w9-before <commit> && \
        .venv/bin/python -m bench.w9 --worker --repeats 3 --baseline /tmp/w9-before
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.servers import PROCS, PYTHON, ROOT, BenchError, RedisServer, log

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


# --- --worker: report() in a real Celery worker (issue 18)

WORKER_MODULE = "bench.w9_worker"


def start_worker(
    tree: Path, name: str, redis: RedisServer, workdir: Path, interval_ms: int | None
) -> str:
    """A Celery worker of ``bench/w9_worker.py`` run from ``tree`` (one prefork child) on a
    queue of its own; returns the queue once the worker says it is ready."""
    if tree.resolve() != ROOT.resolve():
        shutil.copy(ROOT / "bench" / "w9_worker.py", tree / "bench" / "w9_worker.py")
    queue = f"bench-w9-{name}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOBCAST_", "CELERY_")) and k != "REDIS_URL"
    }
    env.update(
        redis.env,
        PYTHONPATH=str(tree),
        PYTHONUNBUFFERED="1",
        JOBCAST_JWT_SECRET="w9-bench-secret-w9-bench-secret-w9-bench",
        JOBCAST_LOG_LEVEL="WARNING",
    )
    if interval_ms is not None:
        env["JOBCAST_PROGRESS_MIN_INTERVAL_MS"] = str(interval_ms)
    log_path = workdir / f"worker-{name}.log"
    argv = [PYTHON, "-m", "celery", "-A", WORKER_MODULE, "worker", "-c", "1", "-P", "prefork",
            "-Q", queue, "-l", "INFO", "--without-mingle", "--without-gossip",
            "-n", f"w9-{name}@%h"]  # fmt: skip
    with log_path.open("w") as out:
        proc = PROCS.spawn(f"worker-{name}", argv, env=env, cwd=tree, stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if " ready." in log_path.read_text(errors="replace"):
            return queue
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise BenchError(f"the {name} worker did not start (see {log_path})")


class LiveReader(threading.Thread):
    """Reads a partition's event stream as a notifier does (``XREAD`` from its last id) and
    counts the progress events of one job."""

    def __init__(self, url: str, stream: str, job: str) -> None:
        super().__init__(daemon=True)
        import redis

        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.stream, self.job = stream, job
        self.last = (
            self.client.xinfo_stream(stream)["last-generated-id"]
            if self.client.exists(stream)
            else "0-0"
        )
        self.progress = 0
        self.done = threading.Event()

    def run(self) -> None:
        from notifier.core.bus import stream_events

        while not self.done.is_set():
            reply = self.client.xread({self.stream: self.last}, count=1000, block=200)
            for _name, entries in reply or ():
                for event in stream_events(entries):
                    self.last = event.event_id
                    if event.job_id != self.job or event.type != "job_status_update":
                        continue
                    if '"status":"processing"' not in event.payload:
                        continue
                    self.progress += 1
                    if '"progress":100' in event.payload:
                        self.done.set()


def worker_once(queue: str, index: int, seconds: float, url: str) -> dict[str, Any]:
    """One task of ``seconds`` on ``queue``: its own timings, and what reached Redis."""
    import workers
    from bench.w9_worker import report_loop
    from notifier.contract.keys import keyspace
    from notifier.contract.settings import get_settings

    user = f"w9-worker-user-{queue}-{index}"
    part = keyspace(get_settings().partitions).of_user(user)
    reader = LiveReader(url, part.events, "")
    job = workers.submit(report_loop, seconds, user_id=user, options={"queue": queue})
    reader.job = job
    reader.start()
    result: dict[str, Any] = report_loop.AsyncResult(job).get(timeout=seconds + 120)
    reader.done.wait(timeout=10)
    reader.done.set()
    reader.join(timeout=5)
    history = reader.client.xrange(part.job_events(job))
    processing = [
        fields for _id, fields in history
        if fields.get("t") == "job_status_update" and '"status":"processing"' in fields.get("p", "")
    ]  # fmt: skip
    reader.client.close()
    result.update(
        stored=len(processing),
        live=reader.progress,
        live_per_s=reader.progress / result["seconds"],
    )
    return result


def worker_main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="jobcast-w9-worker-"))
    redis = RedisServer(workdir)
    trees = {"after": ROOT}
    if args.baseline:
        trees = {"before": Path(args.baseline).resolve(), "after": ROOT}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    try:
        redis.start()
        os.environ["REDIS_URL"] = redis.url  # before jobcast or the app read their settings
        os.environ.setdefault("JOBCAST_JWT_SECRET", "w9-bench-secret-w9-bench-secret-w9-bench")
        from notifier.contract.settings import get_settings

        get_settings.cache_clear()
        queues = {
            name: start_worker(tree, name, redis, workdir, args.interval_ms)
            for name, tree in trees.items()
        }
        log(
            f"W9 --worker: {args.repeats} x {args.seconds:g} s per tree {list(trees)}, "
            f"interval {args.interval_ms if args.interval_ms is not None else 'default'} ms, "
            f"{redis.url}"
        )
        for i in range(args.repeats):
            for name, queue in queues.items():
                r = worker_once(queue, i, args.seconds, redis.url)
                log(f"{name} run {i + 1}: {json.dumps(r)}")
                results[name].append(r)
    finally:
        PROCS.stop_all()
    print_worker_table(results)
    return 0


def _timing(summary: dict[str, float], digits: int) -> str:
    if not summary.get("n"):
        return "-"
    return f"{summary['median_us']:.{digits}f} ({summary['p99_us']:.{max(0, digits - 1)}f})"


def print_worker_table(results: dict[str, list[dict[str, Any]]]) -> None:
    print(
        "| code | run | report() calls | coalesced: median µs (p99) | emitted: median µs (p99) "
        "| emitted calls | Redis writes per emitted call (coalesced calls: all) "
        "| progress events read live | per s | in the job's history |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        for i, r in enumerate(runs, 1):
            c, e = r["coalesced"], r["emitted"]
            print(
                f"| {name} | {i} | {r['calls']:,} | {_timing(c, 2)} | {_timing(e, 0)} | {e['n']} "
                f"| {r['writes_per_emit']:.2f} ({r['writes_coalesced']}) | {r['live']:,} "
                f"| {r['live_per_s']:.1f} | {r['stored']:,} |"
            )
        if len(runs) > 1:

            def med(f: Any, runs: list[dict[str, Any]] = runs) -> float:
                values = [v for v in (f(r) for r in runs) if v is not None]
                return float(statistics.median(values)) if values else float("nan")

            def us(value: float, digits: int) -> str:
                return "-" if value != value else f"{value:.{digits}f}"

            print(
                f"| {name} | median | {med(lambda r: r['calls']):,.0f} "
                f"| {us(med(lambda r: r['coalesced'].get('median_us')), 2)} "
                f"| {us(med(lambda r: r['emitted'].get('median_us')), 0)} "
                f"| {med(lambda r: r['emitted']['n']):.0f} "
                f"| {med(lambda r: r['writes_per_emit']):.2f} | {med(lambda r: r['live']):,.0f} "
                f"| {med(lambda r: r['live_per_s']):.1f} | {med(lambda r: r['stored']):,.0f} |"
            )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.w9",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help="report() in a real worker")
    parser.add_argument("--seconds", type=float, default=10.0, help="--worker: task length")
    parser.add_argument("--baseline", help="--worker: a checkout to compare with, same run")
    parser.add_argument(
        "--interval-ms",
        type=int,
        help="--worker: the workers' JOBCAST_PROGRESS_MIN_INTERVAL_MS (0: every report emits)",
    )
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
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
