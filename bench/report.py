"""The results: medians over the repeats, jobcast/baseline ratios (for each jobcast transport
path), a markdown table and JSON."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import w8
from bench.servers import BENCH_DIR, NODE, ROOT

SERVERS = ("jobcast", "jobcast-stock", "naive", "node")
#: Servers whose figures are divided by the baselines' (jobcast's two transport paths).
SUBJECTS = ("jobcast", "jobcast-stock")
BASELINES = ("naive", "node")


def ratio_columns(servers: list[str]) -> list[tuple[str, str]]:
    """(numerator, denominator) per ratio column: each jobcast path against each baseline
    in the run, then the stock path against the fast one."""
    cols = [(a, b) for a in SUBJECTS if a in servers for b in BASELINES if b in servers]
    if all(s in servers for s in SUBJECTS):
        cols.append(("jobcast-stock", "jobcast"))
    return cols


# (metric, label, which way is better) per workload kind
STREAM = [
    ("p50_ms", "delay p50 (ms)", "lower"),
    ("p95_ms", "delay p95 (ms)", "lower"),
    ("p99_ms", "delay p99 (ms)", "lower"),
    ("max_ms", "delay max (ms)", "lower"),
    ("sent", "events sent", ""),
    ("received", "events received", ""),
    ("missing", "missing (sent - received)", "lower"),
    ("final_missing", "jobs whose last event never came", "lower"),
    ("server_cpu_s", "server CPU (s)", "lower"),
    ("server_us_per_event", "server CPU per delivered event (µs)", "lower"),
    ("loadgen_cpu_s", "load generator CPU (s)", ""),
    ("producer_cpu_s", "producer CPU (s)", ""),
    ("redis_cpu_s", "redis-server CPU (s)", "lower"),
    ("redis_us_per_sent_event", "redis-server CPU per published event (µs)", "lower"),
    ("redis_in_commands_us_per_sent_event", "  of it inside commands (µs; commandstats)", "lower"),
    ("redis_in_scripts_us_per_sent_event", "    of that in scripts (µs)", "lower"),
    ("redis_calls_per_event", "Redis commands per event (all processes)", "lower"),
]
BURST = [
    ("delivered_per_s", "delivered messages/s (all processes)", "higher"),
    ("delivered_per_s_per_process", "delivered messages/s per server process", "higher"),
    ("settled_per_s", "events/s until every client has its final state", "higher"),
    ("settled_per_s_per_process", "  the same per server process", "higher"),
    ("producer_per_s", "producer publish rate (events/s)", ""),
    ("p50_ms", "delay p50 (ms)", "lower"),
    ("p99_ms", "delay p99 (ms)", "lower"),
    ("sent", "events sent", ""),
    ("received", "events received", ""),
    ("final_missing", "jobs whose last event never came", "lower"),
    ("server_cpu_s", "server CPU (s)", "lower"),
    ("server_us_per_event", "server CPU per delivered message (µs)", "lower"),
    ("server_us_per_sent_event", "server CPU per published event (µs)", "lower"),
    ("loadgen_cpu_s", "load generator CPU (s)", ""),
    ("producer_cpu_s", "producer CPU (s)", ""),
    ("redis_cpu_s", "redis-server CPU (s)", "lower"),
    ("redis_us_per_sent_event", "redis-server CPU per published event (µs)", "lower"),
    ("redis_in_commands_us_per_sent_event", "  of it inside commands (µs; commandstats)", "lower"),
    ("redis_in_scripts_us_per_sent_event", "    of that in scripts (µs)", "lower"),
    ("redis_calls_per_event", "Redis commands per event (all processes)", "lower"),
]
FANOUT = [
    ("last_client_ms", "time until the last client has it (ms, median of 5)", "lower"),
    ("p50_ms", "median client delay (ms)", "lower"),
    ("missing", "missing deliveries", "lower"),
    ("server_us_per_event", "server CPU per delivered message (µs)", "lower"),
    ("server_cpu_s", "server CPU (s)", "lower"),
    ("loadgen_cpu_s", "load generator CPU (s)", ""),
]
MEMORY = [
    ("kib_per_conn", "server RSS per idle connection (KiB)", "lower"),
    ("rss_after_mib", "server RSS with the connections (MiB)", "lower"),
    ("idle_cpu_pct", "server CPU while idle (% of a core)", "lower"),
    ("connect_s", "time to connect them all (s)", "lower"),
]
KIND_ROWS = {"stream": STREAM, "burst": BURST}


def rows_for(workload: Any) -> list[tuple[str, str, str]]:
    if workload.name == "W3":
        return FANOUT
    if workload.name == "W4":
        return MEMORY
    return KIND_ROWS[workload.kind]


# --- environment


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _node_package(name: str) -> str:
    try:
        manifest = json.loads((BENCH_DIR / "node_modules" / name / "package.json").read_text())
        return str(manifest["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def _py_package(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def environment(redis_version: str) -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    commit = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "machine": {
            "nproc": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "cpu_model": model,
            "memory": mem,
            "kernel": platform.release(),
            "loadavg_at_start": os.getloadavg(),
        },
        "versions": {
            "jobcast": f"{_py_package('jobcast')} ({commit}{' + local changes' if dirty else ''})",
            "python": sys.version.split()[0],
            "python-socketio": _py_package("python-socketio"),
            "python-engineio": _py_package("python-engineio"),
            "uvicorn": _py_package("uvicorn"),
            "websockets": _py_package("websockets"),
            "uvloop": _py_package("uvloop"),
            "redis-py": _py_package("redis"),
            "PyJWT": _py_package("PyJWT"),
            "node": _run([NODE, "--version"]),
            "socket.io": _node_package("socket.io"),
            "socket.io-client": _node_package("socket.io-client"),
            "@socket.io/redis-adapter": _node_package("@socket.io/redis-adapter"),
            "@socket.io/redis-emitter": _node_package("@socket.io/redis-emitter"),
            "redis (node)": _node_package("redis"),
            "redis-server": redis_version,
        },
    }


# --- summary


def _median(values: list[Any]) -> float | None:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.median(nums) if nums else None


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{"W1" or "W3@1000": {metric: {server: median over repeats}}}``"""
    grouped: dict[str, dict[str, dict[str, list[Any]]]] = {}
    for rec in records:
        key = rec["workload"] + (f"@{rec['size']}" if rec.get("size") else "")
        for metric, value in rec["metrics"].items():
            grouped.setdefault(key, {}).setdefault(metric, {}).setdefault(rec["server"], [])
            grouped[key][metric][rec["server"]].append(value)
    return {
        key: {
            metric: {server: _median(values) for server, values in per_server.items()}
            for metric, per_server in metrics.items()
        }
        for key, metrics in grouped.items()
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return f"{int(value):,}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "—"
    if b == 0:
        return "—" if a == 0 else "∞"
    return f"{a / b:.2f}×"  # noqa: RUF001


def markdown(
    meta: dict[str, Any],
    workloads: list[Any],
    summary: dict[str, dict[str, dict[str, float | None]]],
    servers: list[str],
) -> str:
    lines = [
        f"# jobcast benchmark — {meta['started']}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Mode: {meta['mode']}; repeats per workload and server: {meta['repeats']} "
        "(figures are medians over the repeats); wall time "
        f"{meta.get('wall_s', 0):.0f} s.",
        "",
        "Machine: {nproc} CPUs ({cpu_model}), {memory}, Linux {kernel}; load average at start "
        "{load}. Server, load generator, producer and Redis all share it.".format(
            **meta["environment"]["machine"],
            load=", ".join(f"{x:.2f}" for x in meta["environment"]["machine"]["loadavg_at_start"]),
        ),
        "",
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["environment"]["versions"].items())
        + ".",
        "",
        "Ratios are jobcast's figure divided by the baseline's: below 1 is better where "
        "lower is better (delays, CPU, memory), above 1 where higher is better (events/s).",
        "",
    ]
    if meta.get("transports"):
        paths = ", ".join(f"{k} transport={v}" for k, v in meta["transports"].items())
        lines += [
            f"jobcast transport paths (start-up log line and /metrics, checked): {paths}; "
            "jobcast-stock is jobcast with JOBCAST_FAST_TRANSPORT=false.",
            "",
        ]
    header = ["workload", "figure", "better", *servers]
    ratio_cols = ratio_columns(servers)
    header += [f"{a}/{b}" for a, b in ratio_cols]
    if any(w.kind != "partitioned" for w in workloads):  # W8 alone: its own tables only
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|")
    for w in workloads:
        if w.kind == "partitioned":
            continue  # its own tables, below
        keys = [f"{w.name}@{s}" for s in w.sizes] if w.sizes else [w.name]
        for key in keys:
            data = summary.get(key)
            if not data:
                continue
            label = key.replace("@", " @ ") + (" clients" if "@" in key else "")
            for metric, title, better in rows_for(w):
                values = data.get(metric)
                if values is None:
                    continue
                cells = [_fmt(values.get(s)) for s in servers]
                ratios = [_ratio(values.get(a), values.get(b)) for a, b in ratio_cols]
                lines.append("| " + " | ".join([label, title, better, *cells, *ratios]) + " |")
    lines += w8.markdown(summary, _fmt, _ratio)
    lines += ["", "Workloads:", ""]
    for w in workloads:
        size = f"{w.clients} clients" if w.clients else "sizes " + ", ".join(map(str, w.sizes))
        extra = []
        if w.rate:
            extra.append(f"{w.rate:g} events/s for {w.duration:g} s")
        if w.count:
            extra.append(f"{w.count:,} events")
        if w.instances > 1:
            extra.append(f"{w.instances} instances per server")
        if w.transports != ("websocket",):
            extra.append("transport " + "+".join(w.transports))
        lines.append(f"- {w.name}: {w.title} ({', '.join([size, *extra])})")
    if meta.get("failures"):
        lines += ["", "Runs that failed:", ""]
        lines += [f"- {f}" for f in meta["failures"]]
    lines.append("")
    return "\n".join(lines)


def write(
    outdir: Path,
    stamp: str,
    meta: dict[str, Any],
    workloads: list[Any],
    records: list[dict[str, Any]],
    servers: list[str],
) -> tuple[Path, Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    summary = summarise(records)
    md_path = outdir / f"{stamp}.md"
    json_path = outdir / f"{stamp}.json"
    md_path.write_text(markdown(meta, workloads, summary, servers))
    json_path.write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": records}, indent=2, default=str)
    )
    return md_path, json_path
