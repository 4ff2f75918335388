"""W8 (issue 14): jobcast's partitioned keyspace, on one Redis and on a 3+3 cluster.

Each run is a W1-style paced run (:func:`bench.workloads.run_stream`: clients subscribed
each to its own job, event k to job k % clients, 1 event/s per job) on one Redis backend
(``single``: the suite's ``redis-server``; ``cluster``: :class:`bench.cluster.BenchCluster`)
in one arrangement of notifiers:

- ``one``: one notifier holds every user: the latency and CPU figures, and the baseline of
  Redis egress per event;
- ``affine``: 3 notifiers, each holding the users of a third of the partitions (contiguous
  ranges, so on the cluster about one master's slots each): what a load balancer hashing
  the user id to a partition range gives;
- ``round-robin``: 3 notifiers, client i on notifier i % 3: every notifier holds users of
  every partition, so each reads all of them (the read-everything cost).

Redis egress is ``total_net_output_bytes`` (summed over the masters on the cluster) over
the measured phase, divided by the events published.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.cluster import BenchCluster
from bench.servers import Backend, log
from bench.workloads import Context, Workload, run_stream
from notifier.contract.keys import keyspace
from notifier.contract.settings import Settings

MODES = ("single", "cluster")
ARRANGEMENTS = ("one", "affine", "round-robin")
NOTIFIERS = 3
#: jobcast's default JOBCAST_PARTITIONS, which the suite leaves as it is.
PARTITIONS = int(Settings.model_fields["partitions"].default)


def placement(arrangement: str, clients: int) -> Callable[[str], list[int]] | None:
    """The notifier of each client for ``arrangement`` (None: the one notifier)."""
    if arrangement == "one":
        return None
    if arrangement == "round-robin":
        return lambda users: [i % NOTIFIERS for i in range(clients)]
    space = keyspace(PARTITIONS)
    # user <users><i>'s partition, and the notifier holding that third of the partitions
    return lambda users: [
        space.index_of(f"{users}{i}") * NOTIFIERS // PARTITIONS for i in range(clients)
    ]


def run_w8(
    ctx: Context, w: Workload, mode: str, arrangement: str, cluster: BenchCluster | None
) -> list[dict[str, Any]]:
    backend: Backend = ctx.redis
    if mode == "cluster":
        if cluster is None:
            raise ValueError("W8 on the cluster needs the cluster started")
        backend = cluster
    sub = replace(ctx, redis=backend)
    notifiers = 1 if arrangement == "one" else NOTIFIERS
    got = run_stream(
        sub, replace(w, instances=notifiers), "jobcast", place=placement(arrangement, w.clients)
    )
    ctx.runs = sub.runs
    for rec in got:
        m = rec["metrics"]
        rec["size"] = f"{mode}/{arrangement}"
        read = [p for p in m["reader_partitions"] if p is not None]
        m["partitions_read_max"] = max(read) if read else None
        m["partitions_read_min"] = min(read) if read else None
        m["notifiers"] = notifiers
        log(
            f"W8 {mode}/{arrangement}: {m['redis_out_bytes_per_event']} Redis output bytes per "
            f"event, partitions read per notifier {m['reader_partitions']}"
        )
    return got


def steps(w: Workload, repeats: int) -> list[dict[str, Any]]:
    """The runs of W8, in order: per repeat, each backend, each arrangement."""
    return [
        {"kind": "partitioned", "server": "jobcast", "workload": w, "mode": mode,
         "arrangement": arrangement, "repeat": r + 1, "label": f"W8 {mode}/{arrangement}"}
        for r in range(repeats) for mode in MODES for arrangement in ARRANGEMENTS
    ]  # fmt: skip


# --- the report's W8 section

Summary = dict[str, dict[str, dict[str, float | None]]]


def _value(summary: Summary, mode: str, arrangement: str, metric: str) -> float | None:
    return summary.get(f"W8@{mode}/{arrangement}", {}).get(metric, {}).get("jobcast")


def markdown(summary: Summary, fmt: Any, ratio: Any) -> list[str]:
    """Two tables: one notifier on one Redis vs the cluster; Redis egress per event for
    the three arrangements, with ratios to the one notifier's of the same backend."""
    if not any(key.startswith("W8@") for key in summary):
        return []
    lines = [
        "",
        "## W8: partitions, one Redis vs a 3-master cluster (jobcast)",
        "",
        "One notifier holding every user:",
        "",
        "| figure | one Redis | cluster (3 masters + 3 replicas) | cluster/one Redis |",
        "|---|---:|---:|---:|",
    ]
    for metric, title in (
        ("p50_ms", "delay p50 (ms)"),
        ("p99_ms", "delay p99 (ms)"),
        ("max_ms", "delay max (ms)"),
        ("server_us_per_event", "server CPU per delivered event (µs)"),
        ("redis_us_per_event", "Redis CPU per delivered event (µs; the masters)"),
        ("missing", "missing (sent - received)"),
        ("partitions_read_max", "partitions read by the notifier"),
    ):
        a, b = (_value(summary, mode, "one", metric) for mode in MODES)
        lines.append(f"| {title} | {fmt(a)} | {fmt(b)} | {ratio(b, a)} |")
    lines += [
        "",
        "Redis output bytes per event (`total_net_output_bytes`, summed over the masters on "
        'the cluster, where it includes the replication stream to the replicas; "to clients" '
        "leaves that out) and the ratio to one notifier's on the same backend:",
        "",
        "| notifiers | one Redis | ratio | cluster | ratio | cluster, to clients | ratio | "
        "cluster, to replicas | partitions read per notifier (one Redis; cluster) | "
        "delay p99 (ms; one Redis; cluster) | Redis output to clients with no events "
        "(bytes/s; one Redis; cluster) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arrangement, title in (
        ("one", "1 notifier, every user (baseline)"),
        ("affine", "(a) 3, partition-affine"),
        ("round-robin", "(b) 3, round-robin"),
    ):
        cells = []
        for mode, metric in (
            ("single", "redis_out_bytes_per_event"),
            ("cluster", "redis_out_bytes_per_event"),
            ("cluster", "redis_client_out_bytes_per_event"),
        ):
            got = _value(summary, mode, arrangement, metric)
            cells += [fmt(got), ratio(got, _value(summary, mode, "one", metric))]
        cells.append(fmt(_value(summary, "cluster", arrangement, "redis_repl_out_bytes_per_event")))
        cells.append(
            "; ".join(
                f"{fmt(_value(summary, m, arrangement, 'partitions_read_min'))} to "
                f"{fmt(_value(summary, m, arrangement, 'partitions_read_max'))}"
                for m in MODES
            )
        )
        for metric in ("p99_ms", "redis_idle_client_out_bytes_per_s"):
            cells.append("; ".join(fmt(_value(summary, m, arrangement, metric)) for m in MODES))
        lines.append(f"| {title} | {' | '.join(cells)} |")
    return lines
