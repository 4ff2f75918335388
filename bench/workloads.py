"""The workloads of issue 7 and how one run of each is carried out against one server.

A run: fresh Redis contents, the server(s) under test started, the matching producer, the
load generator connecting its clients; then the measured phase, bracketed by CPU readings
of every process involved. Nothing here asserts anything about the figures.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.servers import (
    Backend,
    LineChild,
    Profiler,
    Server,
    cpu_seconds,
    loadgen,
    log,
    rss_kib,
)


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    kind: str  # "stream" (paced events), "burst" (as fast as possible), "population"
    clients: int = 0
    rate: float = 0.0
    duration: float = 0.0
    count: int = 0
    transports: tuple[str, ...] = ("websocket",)
    instances: int = 1
    sizes: tuple[int, ...] = ()
    broadcasts: int = 5


FULL: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("W1", "latency: 1 event/s to each of N subscribed websocket clients",
                 "stream", clients=1000, rate=1000, duration=20),
        Workload("W1b", "latency at 5x the rate (W1 with 5,000 events/s)",
                 "stream", clients=1000, rate=5000, duration=10),
        Workload("W2", "throughput: a bounded burst to 200 clients, as fast as delivered",
                 "burst", clients=200, count=200_000),
        Workload("W3", "fan-out: one system broadcast to every connected client (median of 5)",
                 "population", sizes=(1000, 5000)),
        Workload("W4", "memory: server RSS per idle websocket connection",
                 "population", sizes=(1000, 5000)),
        Workload("W5", "polling: clients forced to long-polling, paced events",
                 "stream", clients=200, rate=200, duration=20, transports=("polling",)),
        Workload("W6", "scale-out: W2 with two server instances, clients split between them",
                 "burst", clients=200, count=200_000, instances=2),
        Workload("W7", "capacity: 10,000 websocket clients while delivering 1,000 events/s",
                 "stream", clients=10_000, rate=1000, duration=20),
        Workload("W8", "partitions: one Redis vs a 3+3 cluster; Redis egress with 3 notifiers "
                 "holding users by partition vs round-robin (jobcast only)",
                 "partitioned", clients=2000, rate=2000, duration=20),
    )
}  # fmt: skip

DEFAULT_ORDER = ("W1", "W1b", "W2", "W3", "W4", "W5", "W6", "W8")


def scaled(w: Workload, scale: float, duration_scale: float) -> Workload:
    def n(x: int) -> int:
        return max(2, round(x * scale))

    return replace(
        w,
        clients=n(w.clients) if w.clients else 0,
        rate=max(2.0, w.rate * scale) if w.rate else 0.0,
        duration=max(2.0, w.duration * duration_scale) if w.duration else 0.0,
        count=n(w.count) if w.count else 0,
        sizes=tuple(n(s) for s in w.sizes),
    )


@dataclass
class Context:
    redis: Backend
    secret: str
    logdir: Path
    jobcast_app: str = "api"
    burst_batch: int = 100
    burst_connections: int = 2
    concurrency: int = 32
    settle: float = 1.0
    idle_wait: float = 3.0  # W4: how long the idle CPU is measured
    profile_dir: Path | None = None  # --profile: py-spy on jobcast during measured phases
    runs: int = 0

    def next_prefix(self) -> str:
        self.runs += 1
        return f"r{self.runs}-"

    def server(self, name: str, *, announce: bool = False) -> Server:
        return Server(
            name,
            self.redis,
            self.secret,
            self.logdir,
            jobcast_app=self.jobcast_app,
            burst_batch=self.burst_batch,
            burst_connections=self.burst_connections,
            announce=announce,
        )


# --- helpers


@contextlib.contextmanager
def profiled(ctx: Context, server: Server, label: str) -> Iterator[None]:
    """py-spy on each jobcast process (either transport path) while the block runs (with
    ``--profile``)."""
    profilers: list[Profiler] = []
    if ctx.profile_dir is not None and server.is_jobcast:
        for inst in server.instances:
            path = ctx.profile_dir / f"{label}-{server.name}-{inst.port}.txt"
            profilers.append(Profiler(inst.pid, path))
            log(f"profiling {server.name}:{inst.port} into {path}")
    try:
        yield
    finally:
        for profiler in profilers:
            profiler.stop()


@contextlib.contextmanager
def started(ctx: Context, name: str, instances: int) -> Iterator[Server]:
    ctx.redis.flush()
    server = ctx.server(name)
    try:
        server.start(instances)
        yield server
    finally:
        server.stop()


def verify_transport(ctx: Context, name: str) -> str:
    """Start jobcast server ``name`` once with its start-up line logged and check that the
    line and ``/metrics`` name the transport path ``name`` stands for (TransportMismatch
    otherwise); returns the line. Every measured run checks ``/metrics`` again."""
    ctx.redis.flush()
    server = ctx.server(name, announce=True)
    try:
        (inst,) = server.start(1)
        return server.check_log_path(inst)
    finally:
        server.stop()


@contextlib.contextmanager
def child(make: Any) -> Iterator[LineChild]:
    proc: LineChild | None = None
    try:
        proc = make()
        yield proc
    finally:
        if proc is not None:
            proc.stop()


def ready_timeout(clients: int) -> float:
    return 60.0 + clients * 0.05


#: The commands jobcast's scripts call: commandstats counts a command called from a script
#: both on its own line and in the script's time, so these are left out of the sum (their
#: few direct calls, presence's ZADD say, with them).
_SCRIPTED = frozenset(
    "xadd hmget hset hget hdel hincrby hsetnx publish expire zadd zrem zremrangebyrank append"
    " strlen".split()
)


def _inside_script(name: str) -> bool:
    return name in _SCRIPTED


def calls_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Redis commands issued meanwhile (by everyone: server, producer, and the INFO itself)."""
    delta = {name: n - before.get(name, 0) for name, n in after.items()}
    return dict(sorted(((k, v) for k, v in delta.items() if v > 0), key=lambda kv: -kv[1]))


def cpu(server: Server, **others: int | list[int] | None) -> dict[str, float]:
    """CPU seconds so far of the server's processes and of each other role (a PID, or a
    list of them: a cluster's masters)."""
    readings = {"server": sum(cpu_seconds(pid) for pid in server.pids)}
    for role, pids in others.items():
        listed = pids if isinstance(pids, list) else [pids] if pids else []
        readings[role] = sum(cpu_seconds(pid) for pid in listed)
    return readings


def metric_sum(url: str, name: str) -> float | None:
    """The sum of the samples of metric ``name`` in ``url``/metrics (None if unreadable)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    samples = [line.rsplit(" ", 1)[1] for line in text.splitlines()
               if line.startswith((name + " ", name + "{"))]  # fmt: skip
    return sum(float(x) for x in samples) if samples else None


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {f"{role}_cpu_s": round(after[role] - before[role], 3) for role in before}


def open_clients(
    ctx: Context, server: Server, clients: int, prefix: str, *, subscribe: bool,
    transports: tuple[str, ...] = ("websocket",), duration: float = 0.0,
    url_of: list[int] | None = None,
) -> LineChild:  # fmt: skip
    """``url_of``: the index in ``server.urls`` of each client's server (default: client
    ``i`` to ``i % len(urls)``)."""
    wait = ready_timeout(clients)
    params: dict[str, Any] = {
        "urls": server.urls,
        "transports": list(transports),
        "clients": clients,
        "secret": ctx.secret,
        "userPrefix": f"{prefix}u",
        "jobPrefix": f"{prefix}j",
        "subscribe": subscribe,
        "concurrency": ctx.concurrency,
        "readyTimeoutMs": int(wait * 1000),
        "deadlineS": int(wait + duration * 3 + 300),
    }
    if url_of is not None:
        params["urlOf"] = url_of
    return loadgen(params, label=server.name)


def expect_ready(lg: LineChild, clients: int) -> dict[str, Any]:
    ready = lg.expect(["ready"], timeout=ready_timeout(clients) + 30)
    if ready["connected"] < clients or ready["failed"]:
        log(
            f"{ready['connected']}/{clients} clients connected, {ready['failed']} failed: "
            f"{ready['errors']}"
        )
    return ready


# --- runners: each returns a list of (workload name, size, metrics) records


def measure(
    w: Workload, name: str, producer: LineChild, lg: LineChild, plan: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """The measured phase of a stream or burst run: publish, then wait for the clients."""
    if w.kind == "burst":
        log(f"{w.name} {name}: publishing {w.count} events as fast as possible")
        done = producer.call(
            {"cmd": "burst", "count": w.count, **plan}, ["done"], timeout=w.count / 500 + 60
        )
        drain_timeout = w.count / 2000 * 1000 + 30_000
    else:
        log(f"{w.name} {name}: {w.rate:g} events/s for {w.duration:g}s")
        done = producer.call(
            {"cmd": "rate", "rate": w.rate, "durationS": w.duration, **plan}, ["done"],
            timeout=w.duration * 1.5 + 60,
        )  # fmt: skip
        drain_timeout = 60_000
    stats = lg.call(
        {"cmd": "wait", "kind": "job", "sent": done["sent"], "jobs": plan["jobs"],
         "quietMs": 3000, "timeoutMs": drain_timeout},
        ["stats"], timeout=drain_timeout / 1000 + 30,
    )  # fmt: skip
    return done, stats, drain_timeout


def run_stream(
    ctx: Context, w: Workload, name: str, place: Callable[[str], list[int]] | None = None
) -> list[dict[str, Any]]:
    """Paced events (W1, W1b, W5, W7, W8) or a burst (W2, W6) to clients subscribed each to
    its own job; event k goes to job k % clients. ``place``: given the run's user prefix,
    the server instance of each client (``url_of`` of :func:`open_clients`; W8)."""
    prefix = ctx.next_prefix()
    url_of = place(f"{prefix}u") if place is not None else None
    jobs = w.clients
    plan = {"jobs": jobs, "jobPrefix": f"{prefix}j", "userPrefix": f"{prefix}u"}
    with started(ctx, name, w.instances) as server, child(server.producer) as producer:
        producer.call({"cmd": "setup", **plan}, ["done"], timeout=60 + jobs * 0.01)
        with child(
            lambda: open_clients(
                ctx, server, w.clients, prefix, subscribe=True,
                transports=w.transports, duration=w.duration, url_of=url_of,
            )
        ) as lg:  # fmt: skip
            ready = expect_ready(lg, w.clients)
            idle_before = ctx.redis.output_bytes()
            time.sleep(ctx.settle)
            idle_after = ctx.redis.output_bytes()  # no events: the readers' own
            before = cpu(server, loadgen=lg.pid, producer=producer.pid, redis=ctx.redis.pids)
            lg.call({"cmd": "reset"}, ["reset"], timeout=10)
            calls_before = ctx.redis.command_calls()
            usec_before = ctx.redis.command_calls("usec")
            out_before = ctx.redis.output_bytes()
            with profiled(ctx, server, f"{w.name}-{prefix.strip('-')}"):
                done, stats, _ = measure(w, name, producer, lg, plan)
            after = cpu(server, loadgen=lg.pid, producer=producer.pid, redis=ctx.redis.pids)
            out_after = ctx.redis.output_bytes()
            rss = sum(rss_kib(pid) for pid in server.pids)
            calls = calls_delta(calls_before, ctx.redis.command_calls())
            usec = calls_delta(usec_before, ctx.redis.command_calls("usec"))
            partitions = (
                [metric_sum(url, "jobcast_reader_partitions") for url in server.urls]
                if server.is_jobcast
                else []
            )

    sent, received = int(done["sent"]), int(stats["received"])
    delay = stats["delayMs"]
    cpus = cpu_delta(before, after)
    metrics: dict[str, Any] = {
        "clients": w.clients,
        "connected": ready["connected"],
        "connect_s": round(ready["connectMs"] / 1000, 2),
        "sent": sent,
        "received": received,
        "missing": sent - received,
        "final_missing": stats["finalMissing"],
        "out_of_order": stats["outOfOrder"],
        "disconnects": stats["disconnects"],
        "p50_ms": delay["p50"],
        "p95_ms": delay["p95"],
        "p99_ms": delay["p99"],
        "max_ms": delay["max"],
        "producer_per_s": round(sent / max(1e-3, (done["t1"] - done["t0"]) / 1000), 1),
        "server_rss_mib": round(rss / 1024, 1),
        "drain_ended": stats["ended"],
        "slowest_at_s_ms": stats.get("slowest", []),
        "redis_calls": calls,
        "redis_calls_per_event": round(sum(calls.values()) / max(1, sent), 2),
        "xread_per_event": round(calls.get("xread", 0) / max(1, sent), 3),
        # Redis output (total_net_output_bytes), and of it to replicas and to clients
        "redis_out_bytes": out_after[0] - out_before[0],
        "redis_out_bytes_per_event": round((out_after[0] - out_before[0]) / max(1, sent), 1),
        "redis_repl_out_bytes_per_event": round((out_after[1] - out_before[1]) / max(1, sent), 1),
        "redis_client_out_bytes_per_event": round(
            (out_after[0] - out_after[1] - out_before[0] + out_before[1]) / max(1, sent), 1
        ),
        "redis_idle_client_out_bytes_per_s": round(
            (idle_after[0] - idle_after[1] - idle_before[0] + idle_before[1]) / ctx.settle
        ),
        "reader_partitions": partitions,
        "per_instance_received": stats["perUrl"],
        **cpus,
        "server_us_per_event": round(cpus["server_cpu_s"] * 1e6 / max(1, received), 1),
        "server_us_per_sent_event": round(cpus["server_cpu_s"] * 1e6 / max(1, sent), 1),
        "loadgen_us_per_event": round(cpus["loadgen_cpu_s"] * 1e6 / max(1, received), 1),
        "redis_us_per_event": round(cpus["redis_cpu_s"] * 1e6 / max(1, received), 1),
        # per event published: the figure issue 18 sets a target for (Redis's own CPU,
        # /proc, over the measured window: publishing, reading and everything else)
        "redis_us_per_sent_event": round(cpus["redis_cpu_s"] * 1e6 / max(1, sent), 1),
        # where Redis's CPU went: inside commands (INFO commandstats; a script's usec
        # includes the commands it calls), per command and in all, per published event;
        # the rest of its CPU is network I/O, the event loop and housekeeping
        "redis_command_us_per_sent_event": {
            name: round(us / max(1, sent), 2) for name, us in usec.items()
        },
        "redis_in_commands_us_per_sent_event": round(
            sum(us for name, us in usec.items() if not _inside_script(name)) / max(1, sent), 2
        ),
        "redis_in_scripts_us_per_sent_event": round(
            (usec.get("evalsha", 0) + usec.get("eval", 0)) / max(1, sent), 2
        ),
    }
    if w.kind == "burst" and stats["lastRecv"] and stats["firstSentAt"]:
        window = max(1e-3, (stats["lastRecv"] - stats["firstSentAt"]) / 1000)
        metrics["window_s"] = round(window, 3)
        metrics["delivered_per_s"] = round(received / window, 1)
        metrics["delivered_per_s_per_process"] = round(received / window / w.instances, 1)
        # Events brought to their clients' screens per second: jobcast's outbox may merge a
        # progress update that is still unsent when a newer one for the job arrives, so
        # fewer messages can carry all the events; this counts the events themselves.
        if stats["finalMissing"] == 0:
            metrics["settled_per_s"] = round(sent / window, 1)
            metrics["settled_per_s_per_process"] = round(sent / window / w.instances, 1)
    log(
        f"{w.name} {name}: sent {sent}, received {received}, p50 {delay['p50']} ms, "
        f"p99 {delay['p99']} ms, server CPU {cpus['server_cpu_s']} s"
        + (f", {metrics.get('delivered_per_s')} ev/s" if w.kind == "burst" else "")
    )
    return [{"workload": w.name, "size": None, "metrics": metrics}]


def run_population(
    ctx: Context, name: str, size: int, *, memory: Workload | None, fanout: Workload | None
) -> list[dict[str, Any]]:
    """``size`` idle websocket clients: RSS per connection (W4), then system broadcasts to
    all of them (W3)."""
    prefix = ctx.next_prefix()
    records: list[dict[str, Any]] = []
    with started(ctx, name, 1) as server, child(server.producer) as producer:
        time.sleep(ctx.settle)
        rss_before = sum(rss_kib(pid) for pid in server.pids)
        with child(lambda: open_clients(ctx, server, size, prefix, subscribe=False)) as lg:
            ready = expect_ready(lg, size)
            connected = int(ready["connected"])
            time.sleep(ctx.settle + 1.0)
            idle_a = cpu(server)
            time.sleep(ctx.idle_wait)
            idle_b = cpu(server)
            rss_after = sum(rss_kib(pid) for pid in server.pids)
            if memory is not None:
                metrics = {
                    "clients": size,
                    "connected": connected,
                    "connect_s": round(ready["connectMs"] / 1000, 2),
                    "kib_per_conn": round((rss_after - rss_before) / max(1, connected), 2),
                    "rss_before_mib": round(rss_before / 1024, 1),
                    "rss_after_mib": round(rss_after / 1024, 1),
                    "idle_cpu_pct": round(
                        (idle_b["server"] - idle_a["server"]) / ctx.idle_wait * 100, 1
                    ),
                }
                log(f"W4 {name} {size}: {metrics['kib_per_conn']} KiB per connection")
                records.append({"workload": memory.name, "size": size, "metrics": metrics})
            if fanout is not None:
                before = cpu(server, loadgen=lg.pid, producer=producer.pid, redis=ctx.redis.pids)
                lasts, p50s, got = [], [], []
                profile = profiled(ctx, server, f"{fanout.name}-{size}-{prefix.strip('-')}")
                with profile:
                    for b in range(fanout.broadcasts):
                        lg.call({"cmd": "reset"}, ["reset"], timeout=10)
                        producer.call({"cmd": "broadcast", "id": b}, ["done"], timeout=30)
                        stats = lg.call(
                            {"cmd": "wait", "kind": "broadcast", "expect": connected,
                             "quietMs": 3000, "timeoutMs": 30_000},
                            ["stats"], timeout=60,
                        )  # fmt: skip
                        lasts.append(stats["delayMs"]["max"])
                        p50s.append(stats["delayMs"]["p50"])
                        got.append(stats["received"])
                        time.sleep(0.3)
                after = cpu(server, loadgen=lg.pid, producer=producer.pid, redis=ctx.redis.pids)
                cpus = cpu_delta(before, after)
                delivered = sum(got)
                valid = [x for x in lasts if x is not None]
                metrics = {
                    "clients": size,
                    "connected": connected,
                    "last_client_ms": round(statistics.median(valid), 3) if valid else None,
                    "last_client_ms_each": lasts,
                    "p50_ms": round(statistics.median([x for x in p50s if x is not None]), 3)
                    if any(x is not None for x in p50s)
                    else None,
                    "received_min": min(got),
                    "missing": connected * fanout.broadcasts - delivered,
                    **cpus,
                    "server_us_per_event": round(cpus["server_cpu_s"] * 1e6 / max(1, delivered), 1),
                }
                log(f"W3 {name} {size}: last client after {metrics['last_client_ms']} ms")
                records.append({"workload": fanout.name, "size": size, "metrics": metrics})
    return records
