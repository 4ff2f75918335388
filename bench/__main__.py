"""jobcast's benchmark suite (issue 7): ``bash bench/run.sh [options]`` or
``.venv/bin/python -m bench [options]`` (the latter needs ``npm ci`` in bench/ first).

Runs each selected workload against jobcast (and, with ``--servers ...,jobcast-stock``,
jobcast on its stock transport path) and the two baselines, each at least twice, and writes
``bench/results/<timestamp>.md`` and ``.json``. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import secrets
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import report, w8
from bench.cluster import BenchCluster
from bench.servers import (
    BENCH_DIR,
    JOBCAST_PATHS,
    PROCS,
    BenchError,
    RedisServer,
    TransportMismatch,
    install_signal_handlers,
    log,
)
from bench.workloads import (
    DEFAULT_ORDER,
    FULL,
    Context,
    Workload,
    run_population,
    run_stream,
    scaled,
    verify_transport,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench", description="jobcast benchmark suite: jobcast vs naive python-socketio "
        "vs Node socket.io, same auth, rooms and payloads",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="every workload at 1/10 of its size and 1/4 of its duration "
                        "(a smoke run of a few minutes)")  # fmt: skip
    parser.add_argument("--only", default="",
                        help="comma-separated workloads, e.g. W1,W3 (default: "
                        f"{','.join(DEFAULT_ORDER)}; W7 = 10,000 clients, opt-in)")  # fmt: skip
    parser.add_argument(
        "--servers",
        default="jobcast,naive,node",
        help="comma-separated servers under test (default: jobcast,naive,node); also "
        "jobcast-stock: jobcast with JOBCAST_FAST_TRANSPORT=false (the libraries' stock "
        "transport path; jobcast itself runs the fast path)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs per workload and server (default 2; 1 with --quick)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="multiply client counts, rates and event counts (quick: 0.1)",
    )
    parser.add_argument(
        "--duration-scale", type=float, default=None, help="multiply paced durations (quick: 0.25)"
    )
    parser.add_argument(
        "--clients", type=int, default=None, help="override the client count of W1/W1b/W2/W5/W6/W7"
    )
    parser.add_argument("--events", type=int, default=None, help="override the burst size of W2/W6")
    parser.add_argument(
        "--sizes", default=None, help="override the connection counts of W3/W4, e.g. 1000,5000"
    )
    parser.add_argument(
        "--jobcast-app",
        choices=("api", "notifier"),
        default="api",
        help="jobcast entry point: the composed app (python -m api, default; "
        "broadcasts go through the REST API) or the notifier alone",
    )
    parser.add_argument(
        "--burst-batch",
        type=int,
        default=100,
        help="jobcast burst producer: publish-script calls per Redis round "
        "trip (1 = plain publish_sync per event)",
    )
    parser.add_argument(
        "--burst-connections",
        type=int,
        default=2,
        help="burst producers (W2/W6): publishing connections, each with its own share of "
        "the jobs (a job's events stay in order on one), as several Celery processes publish",
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="connections the load generator opens at once"
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--keep-logs", action="store_true", help="keep server logs")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record py-spy profiles of jobcast during the measured phases "
        "(collapsed stacks in bench/results/<timestamp>-profiles/; needs "
        "py-spy in the venv)",
    )
    return parser.parse_args(argv)  # fmt: skip


def select_workloads(args: argparse.Namespace) -> list[Workload]:
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(DEFAULT_ORDER)
    unknown = [n for n in names if n.upper() not in {k.upper() for k in FULL}]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {', '.join(FULL)}")
    by_upper = {k.upper(): k for k in FULL}
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    dscale = args.duration_scale if args.duration_scale is not None else (
        0.25 if args.quick else 1.0
    )  # fmt: skip
    chosen = []
    for name in names:
        w = scaled(FULL[by_upper[name.upper()]], scale, dscale)
        if args.clients and w.clients:
            w = Workload(**{**w.__dict__, "clients": args.clients})
        if args.events and w.count:
            w = Workload(**{**w.__dict__, "count": args.events})
        if args.sizes and w.sizes:
            w = Workload(**{**w.__dict__, "sizes": tuple(int(s) for s in args.sizes.split(","))})
        chosen.append(w)
    return chosen


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def plan(workloads: list[Workload], servers: list[str], repeats: int) -> list[dict[str, Any]]:
    """The runs, in order: per workload, per repeat, every server (rotated per repeat so no
    server always goes first). W3 and W4 share their runs when both are selected."""
    steps: list[dict[str, Any]] = []
    names = {w.name for w in workloads}
    for w in workloads:
        if w.kind == "partitioned":
            if "jobcast" in servers:  # W8 measures jobcast alone
                steps += w8.steps(w, repeats)
            continue
        if w.kind == "population":
            if w.name == "W4" and "W3" in names:
                continue  # measured in W3's runs
            memory = w if w.name == "W4" else next((x for x in workloads if x.name == "W4"), None)
            fanout = w if w.name == "W3" else None
            for size in w.sizes:
                for r in range(repeats):
                    for s in servers[r % len(servers) :] + servers[: r % len(servers)]:
                        steps.append(
                            {
                                "kind": "population",
                                "server": s,
                                "size": size,
                                "memory": memory,
                                "fanout": fanout,
                                "repeat": r + 1,
                                "label": "+".join(x.name for x in (fanout, memory) if x),
                            }
                        )
        else:
            for r in range(repeats):
                for s in servers[r % len(servers) :] + servers[: r % len(servers)]:
                    steps.append(
                        {
                            "kind": "stream",
                            "server": s,
                            "workload": w,
                            "repeat": r + 1,
                            "label": w.name,
                        }
                    )
    return steps  # fmt: skip


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    install_signal_handlers()
    raise_fd_limit()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in servers:
        if s not in report.SERVERS:
            raise SystemExit(f"unknown server {s!r}; known: {', '.join(report.SERVERS)}")
    if not (BENCH_DIR / "node_modules" / "socket.io-client").exists():
        raise SystemExit("bench/node_modules is missing: run `bash bench/run.sh` (npm ci)")
    workloads = select_workloads(args)
    steps = plan(workloads, servers, args.repeats)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="jobcast-bench-"))
    started = time.monotonic()
    records: list[dict[str, Any]] = []
    failures: list[str] = []
    redis = RedisServer(workdir)
    cluster: BenchCluster | None = None
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "bench/run.sh " + shlex.join(argv) if argv else "bench/run.sh",
        "mode": "quick" if args.quick else "full",
        "repeats": args.repeats,
        "servers": servers,
        "workloads": [w.__dict__ for w in workloads],
    }
    log(f"{len(steps)} runs: {', '.join(w.name for w in workloads)} x {', '.join(servers)} "
        f"x {args.repeats}; logs in {workdir}")  # fmt: skip
    interrupted = False
    fatal: str | None = None
    try:
        redis.start()
        meta["environment"] = report.environment(redis.version())
        ctx = Context(
            redis=redis,
            secret=secrets.token_hex(24),
            logdir=workdir,
            jobcast_app=args.jobcast_app,
            burst_batch=args.burst_batch,
            burst_connections=args.burst_connections,
            concurrency=args.concurrency,
            idle_wait=1.0 if args.quick else 3.0,
            profile_dir=args.out / f"{stamp}-profiles" if args.profile else None,
        )
        if ctx.profile_dir is not None:
            ctx.profile_dir.mkdir(parents=True, exist_ok=True)
        # Each jobcast server says which transport path it took before anything is measured.
        meta["transports"] = {}
        for name in (s for s in servers if s in JOBCAST_PATHS):
            line = verify_transport(ctx, name)
            meta["transports"][name] = JOBCAST_PATHS[name]
            log(f"{name}: transport={JOBCAST_PATHS[name]} ({line.strip()})")
        if any(step["kind"] == "partitioned" for step in steps):
            log("W8: starting a local Redis Cluster (3 masters, 3 replicas)")
            cluster = BenchCluster(workdir, redis)
            cluster.start()
        for i, step in enumerate(steps, 1):
            what = f"{step['label']}" + (f" @ {step['size']}" if step.get("size") else "")
            log(f"[{i}/{len(steps)}] {what} — {step['server']} (repeat {step['repeat']})")
            try:
                if step["kind"] == "partitioned":
                    got = w8.run_w8(ctx, step["workload"], step["mode"], step["arrangement"],
                                    cluster)  # fmt: skip
                elif step["kind"] == "population":
                    got = run_population(
                        ctx, step["server"], step["size"],
                        memory=step["memory"], fanout=step["fanout"],
                    )  # fmt: skip
                else:
                    got = run_stream(ctx, step["workload"], step["server"])
            except TransportMismatch:
                raise
            except BenchError as exc:
                failures.append(f"{what} {step['server']} repeat {step['repeat']}: {exc}")
                log(f"run failed: {exc}")
                continue
            except Exception as exc:
                failures.append(f"{what} {step['server']} repeat {step['repeat']}: {exc!r}")
                log(f"run failed:\n{traceback.format_exc()}")
                continue
            for rec in got:
                rec.update(server=step["server"], repeat=step["repeat"])
                records.append(rec)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping every process started, writing what was measured")
    except TransportMismatch as exc:
        fatal = str(exc)
        log(f"FATAL, run stopped: {fatal}")
    finally:
        if cluster is not None:
            cluster.stop()
        PROCS.stop_all()
        meta["wall_s"] = round(time.monotonic() - started, 1)
        if fatal:
            failures.append(f"run stopped: {fatal}")
        meta["failures"] = failures
        meta["interrupted"] = interrupted
        meta.setdefault("environment", report.environment("?"))
        if records:
            md, js = report.write(args.out, stamp, meta, workloads, records, servers)
            log(f"wrote {md} and {js}")
            sys.stdout.write(md.read_text())
        if failures or interrupted or args.keep_logs:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        if fatal:
            log(f"FATAL: {fatal}")
    if fatal:
        return 2
    return 130 if interrupted else (1 if failures and not records else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
