"""A stand-in for Celery workers: publishes job events with the producer's own code, fast.

    python -m tests.support.producer queued      --users a,b --jobs 10 --prefix p --out FILE
    python -m tests.support.producer run         --users a,b --jobs 10 --prefix p --steps 7 \
                                                 --seconds 6 --broadcasts 2 --out FILE
    python -m tests.support.producer completions --users a,b --count 500 --result-bytes 1024 \
                                                 --prefix p --out FILE

Events go through what ``report()`` and the signal handlers use: the builders of
``notifier.contract.events``, a ``workers.tracking.Run`` per job (sequence numbers, progress
coalescing, ETA, lease renewal through ``workers.tracking.RUNS``) and
``workers.publisher.emit`` (the Lua publish of ``notifier.core.bus``). ``REDIS_URL`` says where.

Every emitted event is written to ``--out`` as one JSON line: its eventId (null when the
bus dropped or deferred it), type, route, userId, jobId, status, progress, attempt, seq.

Run from the repository's root (``python -m``, as :func:`tests.support.fault_helpers.produce`
does): it must not import ``tests.support.env``, which belongs to the pytest process.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import IO

from notifier.contract.events import (
    STARTED,
    Event,
    job_completed,
    status_update,
    system_notification,
)
from notifier.contract.settings import get_settings
from notifier.core.bus import FANOUT_ROUTES, fan_out_sync
from workers import publisher
from workers.progress import progress_step
from workers.tracking import RUNS, Run


class Recorder:
    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()
        self.count = 0

    def emit(self, event: Event) -> str | None:
        ids: dict[int, str | None] = {}
        if event.route in FANOUT_ROUTES:  # one copy per partition, each with its own id
            publisher.call(
                lambda client: fan_out_sync(client, event, get_settings(), ids), terminal=True
            )
            event_id = ids.get(0)
        else:
            event_id = publisher.emit(event)
        data = event.message.get("data") or {}
        record = {
            "eventId": event_id,
            "eventIds": {str(partition): eid for partition, eid in ids.items()},
            "type": event.type,
            "route": event.route,
            "userId": event.user_id,
            "jobId": event.job_id,
            "status": data.get("status"),
            "progress": data.get("progress"),
            "attempt": event.attempt,
            "seq": event.seq,
        }
        with self._lock:
            self._out.write(json.dumps(record) + "\n")
            self._out.flush()
            self.count += 1
        return event_id


def job_ids(args: argparse.Namespace) -> list[tuple[str, str]]:
    users = [u for u in args.users.split(",") if u]
    return [(f"{args.prefix}-{user}-{j}", user) for user in users for j in range(args.jobs)]


def queued(args: argparse.Namespace, rec: Recorder) -> None:
    for job, user in job_ids(args):
        rec.emit(status_update(job, user, "queued", progress=0, message="Queued"))


def run(args: argparse.Namespace, rec: Recorder) -> None:
    interval = get_settings().progress_min_interval_ms / 1000
    jobs = job_ids(args)
    runs = {job: Run(job, user, 0, interval, rec.emit) for job, user in jobs}
    rounds = args.steps + 2
    pause = args.seconds / rounds
    start = time.monotonic()
    broadcast = 0
    for step in range(rounds):
        for job, user in jobs:
            current = runs[job]
            if step == 0:  # task_prerun
                RUNS.start(job, current)
                rec.emit(
                    status_update(
                        job, user, STARTED, message="Started", attempt=0, seq=current.next_seq()
                    )
                )
            elif step <= args.steps:
                progress_step(current, step * 100 / args.steps, f"Step {step} of {args.steps}", {})
            else:  # task_success
                RUNS.finish(job)
                result = {"success": True, "contentId": f"content-{job}", "title": job}
                rec.emit(job_completed(job, user, result, attempt=0, seq=current.next_seq()))
        for _ in range(args.broadcasts):
            broadcast += 1
            rec.emit(system_notification(f"broadcast {broadcast} from {args.prefix}", "info"))
        # Even pacing: round ``step`` ends no earlier than its share of ``seconds``.
        time.sleep(max(0.0, start + pause * (step + 1) - time.monotonic()))


def completions(args: argparse.Namespace, rec: Recorder) -> None:
    """``count`` finished jobs per user, interleaved, each with a ``result-bytes`` result."""
    users = [u for u in args.users.split(",") if u]
    pause = args.seconds / max(1, args.count)
    start = time.monotonic()
    for n in range(args.count):
        for user in users:
            job = f"{args.prefix}-{user}-{n}"
            result = {"n": n, "pad": "x" * args.result_bytes}
            rec.emit(job_completed(job, user, result))
        if pause:
            time.sleep(max(0.0, start + pause * (n + 1) - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["queued", "run", "completions"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--users", required=True, help="comma-separated user ids")
    parser.add_argument("--prefix", default="p")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--broadcasts", type=int, default=0, help="per round")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--result-bytes", type=int, default=64)
    args = parser.parse_args()
    with open(args.out, "a", encoding="utf-8") as out:
        rec = Recorder(out)
        {"queued": queued, "run": run, "completions": completions}[args.mode](args, rec)
    print(json.dumps({"mode": args.mode, "events": rec.count}), flush=True)


if __name__ == "__main__":
    main()
