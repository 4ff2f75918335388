"""Issue 18's Redis target: what a progress step costs Redis, one command at a time.

The target is ≤ 8 µs of Redis CPU per progress event with every SPEC §5 guarantee kept.
This measures the floor under it, on a ``redis-server`` of its own: the same step
(``lua/progress.lua``'s commands, with its arguments and a real payload) built up one call
at a time, each rung ``--events`` times in pipelines of 100 (the best case: Redis's caches
stay warm; a paced producer's lone calls cost more), ``--repeats`` times, medians.
Per rung: Redis's own CPU (``used_cpu_user`` + ``used_cpu_sys``) per event, and the time
inside the commands (``INFO commandstats``). The last rung is the committed script itself,
through the bus's own call (:func:`notifier.core.bus.publish_call`) on running jobs.

    .venv/bin/python -m bench.redis_floor [--events 20000] [--repeats 3]

Not part of ``bench/run.sh``: it compares Redis with itself, not servers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.servers import PROCS, BenchError, RedisServer, log

PIPELINE = 100
JOBS = 200
PAYLOAD = (
    '{"type":"job_status_update","jobId":"bench-job-0000000000000000000000000000",'
    '"timestamp":"2026-12-04T22:00:00.000Z","data":{"status":"processing","progress":42,'
    '"message":"Generating content: section 3 of 10","etaSeconds":3}}'
)

#: progress.lua's calls, in its order; each rung of the ladder adds the next one.
CALLS = {
    "HMGET": "local cur = redis.call('HMGET', KEYS[2], 'owner', 'state', 'attempt', 'seq', "
    "'lease')",
    "XADD": "local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', 10000, '*', 'r', 'job', "
    "'t', 'job_status_update', 'u', ARGV[1], 'j', ARGV[2], 'p', ARGV[3])",
    "HSET": "redis.call('HSET', KEYS[2], 'attempt', 1, 'seq', ARGV[4], 'eventId', id, "
    "'updatedAt', ARGV[4], 'step', ARGV[3])",
    "history XADD": "redis.pcall('XADD', KEYS[3], 'MAXLEN', '~', 1000, id, 'r', 'job', "
    "'t', 'job_status_update', 'u', ARGV[1], 'j', ARGV[2], 'p', ARGV[3])",
    "HINCRBY": "if redis.call('HINCRBY', KEYS[4], 'processing', 1) == 1 then "
    "redis.call('HSETNX', KEYS[4], 'since', ARGV[4]) end",
    "PUBLISH": "redis.call('PUBLISH', 'live', id .. ' job job_status_update 2 12 0\\n' "
    ".. ARGV[1] .. ARGV[2] .. ARGV[3])",
}

#: (rung, the calls of its script, in progress.lua's order; PUBLISH last as there).
LADDER: list[tuple[str, list[str]]] = [
    ("script: XADD", ["XADD"]),
    ("script: XADD, PUBLISH", ["XADD", "PUBLISH"]),
    ("script: + HMGET (ordering, owner, lease)", ["HMGET", "XADD", "PUBLISH"]),
    ("script: + HSET (the snapshot's step)", ["HMGET", "XADD", "HSET", "PUBLISH"]),
    ("script: + history XADD (REST history)", ["HMGET", "XADD", "HSET", "history XADD", "PUBLISH"]),
    (
        "script: + HINCRBY (job event totals)",
        ["HMGET", "XADD", "HSET", "history XADD", "HINCRBY", "PUBLISH"],
    ),
]

Pipe = Any
Step = Callable[[Pipe, int], None]
Hook = Callable[[], None] | None
#: name, one event's calls, what runs before the measured calls, what checks after.
Rung = tuple[str, Step, Hook, Hook]


class Floor:
    def __init__(self, redis: RedisServer, events: int) -> None:
        import redis as redis_py

        self.client = redis_py.Redis.from_url(redis.url)
        self.events = events

    def measure(self, step: Step, prepare: Hook, check: Hook) -> tuple[float, float]:
        """Redis CPU and time inside commands, µs per event, of ``events`` calls of ``step``
        in pipelines of :data:`PIPELINE`."""
        client = self.client
        client.flushall()
        if prepare is not None:
            prepare()
        client.config_resetstat()
        before = client.info("cpu")
        for start in range(0, self.events, PIPELINE):
            pipe = client.pipeline(transaction=False)
            for k in range(start, min(start + PIPELINE, self.events)):
                step(pipe, k)
            pipe.execute()
        after = client.info("cpu")
        if check is not None:
            check()
        inside = sum(v["usec"] for v in client.info("commandstats").values())
        cpu = sum(after[f] - before[f] for f in ("used_cpu_user", "used_cpu_sys"))
        return cpu * 1e6 / self.events, inside / self.events

    def script(self, calls: list[str]) -> Step:
        source = "\n".join(CALLS[c] for c in calls) + "\nreturn 1"
        sha = self.client.script_load(source)

        def step(pipe: Pipe, k: int) -> None:
            job = f"job:{k % JOBS}"
            pipe.evalsha(sha, 4, "events", job, f"{job}:events", "totals", "u1", "bench-job-01",
                         PAYLOAD, str(k))  # fmt: skip

        return step

    def rungs(self) -> list[Rung]:
        empty = self.client.script_load("return 0")
        fields = {"r": "job", "t": "job_status_update", "u": "u1", "j": "bench-job-01"}

        def xadd(pipe: Pipe, k: int) -> None:
            pipe.xadd("events", {**fields, "p": PAYLOAD}, maxlen=10000, approximate=True)

        def xadd_publish(pipe: Pipe, k: int) -> None:
            xadd(pipe, k)
            pipe.publish("live", PAYLOAD)

        rungs: list[Rung] = [
            (
                "EVALSHA of `return 0` (entering a script)",
                lambda p, k: p.evalsha(empty, 0),
                None,
                None,
            ),
            ("plain XADD (pipelined, no script)", xadd, None, None),
            ("plain XADD + PUBLISH (pipelined, no script)", xadd_publish, None, None),
        ]
        rungs += [(name, self.script(calls), None, None) for name, calls in LADDER]
        rungs.append(self.committed())
        return rungs

    def committed(self) -> Rung:
        """progress.lua itself, as the bus calls it, on :data:`JOBS` running jobs."""
        from notifier.contract.events import status_update
        from notifier.contract.keys import keyspace
        from notifier.contract.settings import get_settings
        from notifier.core import bus

        settings = get_settings()
        space = keyspace(settings.partitions)
        shas: dict[str, str] = {}

        def call(pipe: Pipe, event: Any) -> None:
            c = bus.publish_call(space.of_user(event.user_id), event, settings)
            sha = shas.get(c.source)
            if sha is None:
                sha = shas[c.source] = self.client.script_load(c.source)
            pipe.execute_command("EVALSHA", sha, len(c.keys), *c.keys, *c.args)

        def event(k: int, status: str = "processing") -> Any:
            j = k % JOBS
            return status_update(f"bench-job-{j}", f"bench-user-{j}", status,
                                 progress=k % 100, seq=k // JOBS + 2)  # fmt: skip

        def prepare() -> None:
            shas.clear()
            sync = bus.sync_client(settings)
            for k in range(JOBS):  # the transition to processing, as a worker publishes it
                bus.publish_sync(sync, event(k), settings)

        def check() -> None:
            # Every step went through the hot path: none was handed back to publish.lua
            # (which would add the transition's cost) or dropped.
            appended = sum(self.client.xlen(p.events) for p in space.partitions)
            if appended != JOBS + self.events:
                raise BenchError(f"progress.lua appended {appended - JOBS} of {self.events}")

        def step(pipe: Pipe, k: int) -> None:
            call(pipe, event(k + JOBS))

        return ("the committed progress.lua (bus.publish_call)", step, prepare, check)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_floor", description=__doc__)
    parser.add_argument("--events", type=int, default=20000, help="calls per rung (20000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the ladder (3)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="jobcast-redis-floor-"))
    redis = RedisServer(workdir)
    try:
        redis.start()
        os.environ["REDIS_URL"] = redis.url  # before jobcast reads its settings
        os.environ.setdefault("JOBCAST_JWT_SECRET", "redis-floor-bench-secret-redis-floor")
        floor = Floor(redis, args.events)
        version = floor.client.info("server")["redis_version"]
        rungs = floor.rungs()
        results: dict[str, list[tuple[float, float]]] = {rung[0]: [] for rung in rungs}
        for repeat in range(args.repeats):
            log(f"redis floor: repeat {repeat + 1} of {args.repeats}")
            for name, step, prepare, check in rungs:
                results[name].append(floor.measure(step, prepare, check))
    finally:
        PROCS.stop_all()
    print(f"\nRedis CPU per event, {args.events} events per rung, medians of {args.repeats} "
          f"(Redis {version}, {redis.binary}):\n")  # fmt: skip
    print("| rung | Redis CPU (µs/event) | inside commands (µs/event) |")
    print("|---|---:|---:|")
    for name, runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        inside = statistics.median(r[1] for r in runs)
        print(f"| {name} | {cpu:.2f} | {inside:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
