"""The soak of issue 18: ``make soak`` (``BENCH_MODULE=bench.soak bash bench/run.sh``) or
``.venv/bin/python -m bench.soak [--minutes M] [--connections N] [--rate R]`` (the latter
needs ``npm ci`` in bench/ first and a raised ``ulimit -n``).

One ``redis-server`` and one jobcast notifier (``python -m api``, as the benchmark starts
it), the benchmark's load generator in soak mode (``loadgen.js``: N connections, a
fraction of them reconnecting every minute, half of those with ``lastEventId``), the
benchmark's producer publishing jobs that start and finish continuously at R events/s
(``producer.py``, ``soak_event``), and an admin system broadcast every 10 s (REST). Every
10 s: the notifier's RSS and open file descriptors (/proc), Redis ``used_memory``, and
what ``/metrics`` says. At the end: what each client should have received and did not,
the slope of each curve after the warm-up, ``bench/results/soak-<timestamp>.md`` and
``.png``. Measurement only: nothing asserts, the exit status is 0 when the run was carried
out (criteria met or not).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import soakplot
from bench.producer import SOAK_COMPLETED_STEP, SOAK_CYCLE
from bench.servers import (
    BENCH_DIR,
    PROCS,
    ROOT,
    BenchError,
    LineChild,
    RedisServer,
    Server,
    info_int,
    install_signal_handlers,
    loadgen,
    log,
    rss_kib,
)

#: Curves whose slope after the warm-up is held to the criterion (issue 18).
CRITERION_PCT_PER_10_MIN = 1.0
#: A broadcast counts as promised to a client whose coverage (a session, extended back over
#: the gap before each recovered session) spans from its POST to this long after.
DELIVERY_GRACE_MS = 2000.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="publishing time (default 30)")
    p.add_argument("--connections", type=int, default=5000, help="clients (default 5000)")
    p.add_argument("--rate", type=float, default=1000.0, help="events/s (default 1000)")
    p.add_argument(
        "--churn",
        type=float,
        default=0.1,
        help="fraction of the clients reconnecting every minute (default 0.1)",
    )
    p.add_argument("--churn-every", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--broadcast-every", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--warmup-minutes", type=float, default=5.0,
                   help="left out of the slopes (default 5; capped at half the run)")  # fmt: skip
    p.add_argument("--retention-seconds", type=int, default=None,
                   help="JOBCAST_RETENTION_SECONDS for notifier and producer (default: "
                   "jobcast's, 24 h: Redis then holds every job of the run)")  # fmt: skip
    p.add_argument("--stream-max-events", type=int, default=None,
                   help="JOBCAST_STREAM_MAX_EVENTS (default: jobcast's, 100,000 per "
                   "partition stream)")  # fmt: skip
    p.add_argument("--inbox-max-events", type=int, default=None,
                   help="JOBCAST_INBOX_MAX_EVENTS (default: jobcast's, 1,000 per user and "
                   "per partition's broadcast stream)")  # fmt: skip
    p.add_argument("--concurrency", type=int, default=32, help="connections opened at once")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--keep-logs", action="store_true")
    return p.parse_args(argv)


@dataclass
class SoakServer(Server):
    """The benchmark's jobcast server (and its producer) with some settings of the soak."""

    settings: dict[str, str] = field(default_factory=dict)

    def _env(self) -> dict[str, str]:
        return {**super()._env(), **self.settings}


def soak_settings(args: argparse.Namespace) -> dict[str, str]:
    settings = {}
    if args.retention_seconds is not None:
        settings["JOBCAST_RETENTION_SECONDS"] = str(args.retention_seconds)
    if args.stream_max_events is not None:
        settings["JOBCAST_STREAM_MAX_EVENTS"] = str(args.stream_max_events)
    if args.inbox_max_events is not None:
        settings["JOBCAST_INBOX_MAX_EVENTS"] = str(args.inbox_max_events)
    return settings


# --- sampling


@dataclass
class Sample:
    t: float  # seconds since publishing started
    rss_kib: int
    redis_used_memory: int
    fds: int
    metrics_open_fds: float | None
    tasks: float | None
    connections: float | None
    redis_keys: int


def count_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


#: The notifier's asyncio task gauge (``notifier/observability/metrics.py``: the tasks of
#: its event loop, counted when ``/metrics`` is read). A server without it (an older
#: build) gets its curve reported as not available rather than estimated.
TASK_METRICS = ("jobcast_asyncio_tasks",)


def read_metrics(url: str) -> dict[str, float]:
    """Sums of the unlabelled and labelled samples of each metric in ``url``/metrics."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            sums[name] = sums.get(name, 0.0) + float(value)
    return sums


def take_sample(t: float, pid: int, url: str, redis: RedisServer) -> Sample:
    metrics = read_metrics(url)
    tasks = next((metrics[m] for m in TASK_METRICS if m in metrics), None)
    dbsize = redis.command("DBSIZE")
    return Sample(
        t=round(t, 1),
        rss_kib=rss_kib(pid),
        redis_used_memory=info_int(redis.command("INFO", "memory") or "", "used_memory"),
        fds=count_fds(pid),
        metrics_open_fds=metrics.get("process_open_fds"),
        tasks=tasks,
        connections=metrics.get("jobcast_connections"),
        redis_keys=int(dbsize) if dbsize and dbsize.isdigit() else 0,
    )


# --- broadcasts


@dataclass
class Broadcast:
    ident: int
    t0: float  # epoch ms before the POST
    t1: float  # epoch ms when it was answered
    ok: bool


@dataclass
class Periodic:
    """Broadcasts and samples from their own threads, every ``every`` seconds, until
    ``stop`` (each wait bounded by it)."""

    stop: threading.Event = field(default_factory=threading.Event)
    broadcasts: list[Broadcast] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, name: str, every: float, work: Any) -> None:
        def loop() -> None:
            k = 0
            t0 = time.monotonic()
            while not self.stop.is_set():
                try:
                    work(k)
                except Exception as exc:  # one failed tick must not end the run
                    log(f"{name} {k} failed: {exc!r}")
                k += 1
                self.stop.wait(max(0.0, t0 + k * every - time.monotonic()))

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=40)


def post_broadcast(url: str, token: str, ident: int) -> Broadcast:
    t0 = time.time() * 1000
    request = urllib.request.Request(
        f"{url}/api/v1/websocket/broadcast/system",
        data=json.dumps({"message": f"bench broadcast {ident}", "level": "info"}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    ok = False
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            ok = 200 <= response.status < 300
    except (urllib.error.URLError, OSError) as exc:
        log(f"broadcast {ident} failed: {exc!r}")
    return Broadcast(ident, t0, time.time() * 1000, ok)


# --- accounting


def completed_jobs(sent: int, users: int, user: int) -> int:
    """How many of user ``user``'s jobs had their ``job_completed`` among the first ``sent``
    soak events (``bench.producer.soak_event``)."""
    n = 0
    while (n * SOAK_CYCLE + SOAK_COMPLETED_STEP) * users + user < sent:
        n += 1
    return n


def coverage(sessions: list[list[float]]) -> list[tuple[float, float]]:
    """The times a client was owed every event: each established session, extended back to
    the end of the previous one when it was recovered (``lastEventId`` replayed the gap)."""
    spans: list[tuple[float, float]] = []
    for _opened, established, closed, _with_last, recovered in sessions:
        if not established:
            continue
        end = closed if closed else float("inf")
        if recovered == 1 and spans:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((established, end))
    return spans


def account(
    report: dict[str, Any], sent: int, users: int, broadcasts: list[Broadcast]
) -> dict[str, Any]:
    """What the contract promised each client against what it got (see bench/README.md)."""
    t: dict[str, Any] = {
        "terminal_expected": 0, "terminal_lost": 0, "terminal_via_snapshot_only": 0,
        "terminal_duplicates": 0, "terminal_unexpected": 0,
        "broadcast_expected": 0, "broadcast_lost": 0, "broadcast_duplicates": 0,
        "broadcast_outside_promise_received": 0, "broadcast_outside_promise_missed": 0,
        "duplicates_by_session": {}, "duplicate_examples": [], "sessions": 0,
        "sessions_with_last_event_id": 0, "sessions_recovered": 0,
        "sessions_never_established": 0, "clients_with_loss": 0,
    }  # fmt: skip
    sent_ok = [b for b in broadcasts if b.ok]
    examples: list[str] = []
    for user, client in enumerate(report["clients"]):
        got = client["t"] or []
        snap = client["snap"] or []
        due = completed_jobs(sent, users, user)
        lost_before = t["terminal_lost"] + t["broadcast_lost"]
        for seq in range(max(due, len(got))):
            n = (got[seq] or 0) if seq < len(got) else 0
            s = (snap[seq] or 0) if seq < len(snap) else 0
            if seq >= due:
                t["terminal_unexpected"] += n
                continue
            t["terminal_expected"] += 1
            if n == 0 and s == 0:
                t["terminal_lost"] += 1
                if len(examples) < 10:
                    examples.append(f"client {user}: job {seq} never completed for it")
            elif n == 0:
                t["terminal_via_snapshot_only"] += 1
            t["terminal_duplicates"] += max(0, n - 1)
        for ex in client.get("dupEx") or []:
            if len(t["duplicate_examples"]) < 10:
                t["duplicate_examples"].append([user, *ex])
        for kind, n in (client.get("dup") or {}).items():
            by = t["duplicates_by_session"]
            by[kind] = by.get(kind, 0) + n
        sessions = client["s"]
        t["sessions"] += len(sessions)
        t["sessions_with_last_event_id"] += sum(1 for s in sessions if s[3])
        t["sessions_recovered"] += sum(1 for s in sessions if s[4] == 1)
        t["sessions_never_established"] += sum(1 for s in sessions if not s[1])
        spans = coverage(sessions)
        counts = client["b"] or {}
        for b in sent_ok:
            n = int(counts.get(str(b.ident), 0))
            t["broadcast_duplicates"] += max(0, n - 1)
            if any(a <= b.t0 and b.t1 + DELIVERY_GRACE_MS <= z for a, z in spans):
                t["broadcast_expected"] += 1
                if n == 0:
                    t["broadcast_lost"] += 1
                    if len(examples) < 10:
                        examples.append(f"client {user}: broadcast {b.ident} missing")
            elif n:
                t["broadcast_outside_promise_received"] += 1
            else:
                t["broadcast_outside_promise_missed"] += 1
        if t["terminal_lost"] + t["broadcast_lost"] > lost_before:
            t["clients_with_loss"] += 1
    t["lost"] = t["terminal_lost"] + t["broadcast_lost"]
    t["examples"] = examples
    return t


def slope(points: list[tuple[float, float]]) -> dict[str, float] | None:
    """Least-squares line through (seconds, value): its slope per 10 minutes, absolute and
    as a percentage of the fitted value at the first point."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(p[0] for p in points) / n
    mv = sum(p[1] for p in points) / n
    var = sum((p[0] - mt) ** 2 for p in points)
    if var == 0:
        return None
    b = sum((p[0] - mt) * (p[1] - mv) for p in points) / var
    start = mv + b * (points[0][0] - mt)
    per10 = b * 600
    return {
        "per_10_min": per10,
        "pct_per_10_min": 100 * per10 / start if start else float("nan"),
        "start": start,
        "points": n,
    }


CURVES: dict[str, tuple[str, Callable[[Sample], float | None]]] = {
    "rss": ("notifier RSS (MiB)", lambda s: s.rss_kib / 1024),
    "redis": ("Redis used_memory (MiB)", lambda s: s.redis_used_memory / 2**20),
    "fds": ("notifier open fds", lambda s: float(s.fds)),
    "tasks": ("notifier asyncio tasks", lambda s: s.tasks),
}


# --- the run


def run(args: argparse.Namespace) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="jobcast-soak-"))
    secret = secrets.token_urlsafe(24)
    duration = args.minutes * 60
    warmup = min(args.warmup_minutes * 60, duration / 2)
    users = args.connections
    log(f"soak: {args.minutes:g} min, {users} connections, {args.rate:g} ev/s, workdir {workdir}")
    redis = RedisServer(workdir)
    redis.start()
    server = SoakServer("jobcast", redis, secret, workdir, settings=soak_settings(args))
    (inst,) = server.start(1)
    pid, url = inst.pid, inst.url
    from notifier.edge.auth import mint_token

    admin: str = mint_token(secret, "soak-admin", roles=["ADMIN"], ttl_seconds=duration + 3600)
    plan = {"soak": True, "jobs": users, "jobPrefix": "sj", "userPrefix": "su"}
    producer = server.producer()
    producer.call({"cmd": "setup", **plan}, ["done"], timeout=60 + users * 0.05)
    ready_s = 60.0 + users * 0.05
    params = {
        "urls": [url], "clients": users, "secret": secret, "soak": True,
        "userPrefix": plan["userPrefix"], "jobPrefix": plan["jobPrefix"],
        "concurrency": args.concurrency, "readyTimeoutMs": int(ready_s * 1000),
        "churnFraction": args.churn, "churnEveryS": args.churn_every,
        "deadlineS": int(ready_s + duration * 1.6 + 600),
    }  # fmt: skip
    lg: LineChild = loadgen(params, label="soak")
    ready = lg.expect(["ready"], timeout=ready_s + 30)
    log(f"clients: {ready['connected']}/{users} connected in {ready['connectMs']} ms")
    lg.call({"cmd": "churn"}, ["churning"], timeout=10)

    periodic = Periodic()
    t_start = time.monotonic()
    periodic.start(
        "sample",
        args.sample_every,
        lambda k: periodic.samples.append(take_sample(time.monotonic() - t_start, pid, url, redis)),
    )
    periodic.start(
        "broadcast",
        args.broadcast_every,
        lambda k: periodic.broadcasts.append(post_broadcast(url, admin, k)),
    )
    log(f"publishing for {duration:.0f} s")
    done = producer.call(
        {"cmd": "rate", "rate": args.rate, "durationS": duration, **plan},
        ["done"],
        timeout=duration * 1.5 + 60,
    )
    published_s = time.monotonic() - t_start
    sent = int(done["sent"])
    log(f"published {sent} events in {published_s:.0f} s; letting the last ones arrive")
    # No more broadcasts or samples; no more reconnects scheduled, those under way finish
    # (spread 20 s + gap 2 s) and the last events arrive.
    periodic.join()
    lg.call({"cmd": "calm"}, ["calm"], timeout=10)
    time.sleep(30)
    final = take_sample(time.monotonic() - t_start, pid, url, redis)
    rep = lg.call({"cmd": "report"}, ["report"], timeout=120)
    with contextlib.suppress(Exception):
        producer.stop()
        lg.stop()
    acc = account(rep, sent, users, periodic.broadcasts)
    log(f"lost {acc['lost']} ({acc['terminal_lost']} terminal, {acc['broadcast_lost']} broadcasts)")
    restarts = server_log_problems(server.log_path(inst))
    server.stop()
    redis.stop()
    if not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    return write_results(
        args, stamp, periodic, final, acc, rep, sent, published_s, warmup, duration, ready, restarts
    )


def server_log_problems(path: Path) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line[:300] for line in lines if "ERROR" in line or "Traceback" in line][:20]


def write_results(
    args: argparse.Namespace,
    stamp: str,
    periodic: Periodic,
    final: Sample,
    acc: dict[str, Any],
    rep: dict[str, Any],
    sent: int,
    published_s: float,
    warmup: float,
    duration: float,
    ready: dict[str, Any],
    log_problems: list[str],
) -> Path:
    server_settings = soak_settings(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    md_path = out / f"soak-{stamp}.md"
    png_path = out / f"soak-{stamp}.png"
    samples = [s for s in periodic.samples if s.t <= published_s + 1]
    series: dict[str, list[tuple[float, float]]] = {}
    slopes: dict[str, dict[str, float] | None] = {}
    for key, (_title, get) in CURVES.items():
        pts = [(s.t, v) for s in samples if (v := get(s)) is not None]
        series[key] = pts
        slopes[key] = slope([p for p in pts if p[0] >= warmup])
    soakplot.plot(
        png_path,
        [(CURVES[k][0], series[k]) for k in CURVES],
        marker_s=warmup,
        total_s=published_s,
    )
    bc = periodic.broadcasts
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    lines = [
        f"# Soak {stamp}",
        "",
        f"`python -m bench.soak --minutes {args.minutes:g} --connections {args.connections}"
        f" --rate {args.rate:g}` (churn {args.churn:g}/min, broadcasts every"
        f" {args.broadcast_every:g} s, samples every {args.sample_every:g} s); HEAD {head}"
        + (" with uncommitted changes in the tree" if dirty else "")
        + (f"; settings {server_settings}" if server_settings else "; jobcast's default settings")
        + f"; load average at the end {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores.",
        "",
        "## Criteria (issue 18)",
        "",
        "| criterion | figure | met |",
        "|---|---|---|",
        f"| 0 lost | {acc['lost']} | {'yes' if acc['lost'] == 0 else 'NO'} |",
    ]
    verdicts: dict[str, bool | None] = {}
    for key, (title, _get) in CURVES.items():
        sl = slopes[key]
        if sl is None:
            lines.append(f"| {title} flat (≤ 1 %/10 min after {warmup / 60:g} min) "
                         "| not available | — |")  # fmt: skip
            verdicts[key] = None
            continue
        met = abs(sl["pct_per_10_min"]) <= CRITERION_PCT_PER_10_MIN
        verdicts[key] = met
        lines.append(
            f"| {title} flat (≤ 1 %/10 min after {warmup / 60:g} min) | "
            f"{sl['pct_per_10_min']:+.2f} %/10 min ({sl['per_10_min']:+.3g} per 10 min "
            f"from {sl['start']:.4g}, {sl['points']:.0f} samples) | {'yes' if met else 'NO'} |"
        )
    first = samples[0] if samples else final
    tasks = (
        "not available (no jobcast_asyncio_tasks in the notifier's /metrics)"
        if final.tasks is None
        else f"{first.tasks} / {final.tasks}"
    )
    lines += [
        "",
        f"![curves](soak-{stamp}.png)",
        "",
        "## What ran",
        "",
        f"- published {sent:,} events in {published_s:.0f} s ({sent / max(1, published_s):.0f}"
        f"/s; asked {args.rate:g}/s), {len(bc)} broadcasts "
        f"({sum(1 for b in bc if not b.ok)} failed POSTs)",
        f"- clients: {ready['connected']}/{args.connections} connected at start in "
        f"{ready['connectMs'] / 1000:.1f} s; open at the end {rep['open']}; planned "
        f"reconnects {rep['churned']}; unplanned disconnects {rep['counts']['unplanned']}",
        f"- received: {rep['counts']['terminals']:,} job_completed, "
        f"{rep['counts']['progress']:,} progress, {rep['counts']['broadcasts']:,} broadcasts,"
        f" {rep['counts']['snapshots']:,} snapshots; client errors {rep['errors'] or 'none'}",
        f"- sessions {acc['sessions']:,}: {acc['sessions_with_last_event_id']:,} with "
        f"lastEventId, {acc['sessions_recovered']:,} recovered, "
        f"{acc['sessions_never_established']} never established",
        "",
        "## Delivery",
        "",
        "| | expected | lost | duplicates | other |",
        "|---|---:|---:|---:|---|",
        f"| job terminal events | {acc['terminal_expected']:,} | {acc['terminal_lost']} | "
        f"{acc['terminal_duplicates']} | {acc['terminal_via_snapshot_only']} seen only as a "
        f"completed snapshot; {acc['terminal_unexpected']} unexpected |",
        f"| broadcasts | {acc['broadcast_expected']:,} | {acc['broadcast_lost']} | "
        f"{acc['broadcast_duplicates']} | outside the promise (gap of a reconnect without "
        f"lastEventId, or within {DELIVERY_GRACE_MS / 1000:g} s of a close): "
        f"{acc['broadcast_outside_promise_received']:,} received, "
        f"{acc['broadcast_outside_promise_missed']:,} not |",
        "",
    ]
    if acc["duplicates_by_session"]:
        lines += [
            f"Duplicates by the session they came in: {acc['duplicates_by_session']}; examples"
            " [client, job, first eventId, repeated eventId, session, ms after it was"
            f" established, its lastEventId]: {acc['duplicate_examples']}",
            "",
        ]
    if acc["examples"]:
        lines += ["Examples: " + "; ".join(acc["examples"]), ""]
    lines += [
        "## Samples",
        "",
        f"First / last sample: RSS {first.rss_kib / 1024:.1f} / {final.rss_kib / 1024:.1f} MiB;"
        f" Redis used_memory {first.redis_used_memory / 2**20:.1f} / "
        f"{final.redis_used_memory / 2**20:.1f} MiB (keys {first.redis_keys:,} / "
        f"{final.redis_keys:,}); fds {first.fds} / {final.fds} (process_open_fds "
        f"{first.metrics_open_fds} / {final.metrics_open_fds}); asyncio tasks: " + f"{tasks}.",
        "",
        "| t (s) | RSS (MiB) | Redis used_memory (MiB) | Redis keys | fds | connections |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in samples[:: max(1, len(samples) // 40)]:
        lines.append(
            f"| {s.t:.0f} | {s.rss_kib / 1024:.1f} | {s.redis_used_memory / 2**20:.1f} | "
            f"{s.redis_keys:,} | {s.fds} | {s.connections if s.connections is not None else '-'} |"
        )
    if log_problems:
        lines += ["", "## Notifier log (errors)", "", "```", *log_problems, "```"]
    md_path.write_text("\n".join(lines) + "\n")
    (out / f"soak-{stamp}.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "sent": sent,
                "published_s": published_s,
                "accounting": acc,
                "slopes": slopes,
                "verdicts": verdicts,
                "samples": [vars(s) for s in samples] + [{"final": vars(final)}],
                "broadcasts": [vars(b) for b in periodic.broadcasts],
                "loadgen": {k: v for k, v in rep.items() if k != "clients"},
            },
            indent=1,
        )
    )
    log(f"wrote {md_path} and {png_path}")
    return md_path


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    path: Path
    install_signal_handlers()
    try:
        path = run(args)
    except (BenchError, KeyboardInterrupt) as exc:
        log(f"soak failed: {exc!r}")
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        PROCS.stop_all()
    print(path)
    return 0


if __name__ == "__main__":
    if not shutil.which("node"):
        sys.exit("node (>= 18) is required")
    sys.exit(main(sys.argv[1:]))
