"""The dashboard, the alert rules and compose's observability profile as files; the metrics
they need, in this process: job events by state and errors by code, slow-consumer closes.

(A running server's /metrics and promtool: tests/integration/cluster/test_observability_assets.py.)
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import yaml
from prometheus_client import REGISTRY, generate_latest

from notifier.contract import events
from notifier.core.outbox import SLOW_CONSUMER, Outbox
from notifier.observability import metrics
from tests.support.keyspace import space
from tests.support.observability import (
    ROOT,
    Exposition,
    dashboard_exprs,
    equality_matchers,
    load_dashboard,
    load_rules,
    metric_names,
    rule_exprs,
)

# --- the dashboard


def test_dashboard_loads_and_every_panel_queries_prometheus_by_variable() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "jobcast"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], f"panel {title!r} has no target"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"panel {title!r} has an empty query"
            assert target["datasource"]["uid"] == "${datasource}", title
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, title


def test_dashboard_shows_what_the_issue_asks() -> None:
    exprs = dashboard_exprs(load_dashboard())
    names = metric_names(exprs)
    assert names >= {
        "jobcast_connections",  # by transport and instance
        "jobcast_events_consumed_total",
        "jobcast_events_delivered_total",
        "jobcast_delivery_delay_seconds_bucket",
        "jobcast_reader_lag_entries",
        "jobcast_slow_consumer_closes_total",
        "jobcast_auth_failures_total",
        "jobcast_client_errors_total",  # rate_limited
        "jobcast_job_events_total",  # jobs by state
        "jobcast_jobs_running",
        "jobcast_job_errors_total",  # worker_lost per minute
    }
    joined = "\n".join(exprs)
    for quantile in ("0.5", "0.99"):
        assert f"histogram_quantile({quantile}, " in joined
    assert ("jobcast_job_errors_total", "code", "worker_lost") in equality_matchers(exprs)
    assert ("jobcast_client_errors_total", "code", "rate_limited") in equality_matchers(exprs)
    assert "by (instance, transport)" in joined


def test_job_event_counters_are_taken_with_max_never_summed() -> None:
    """Every instance reads (and counts) every event: a sum would multiply by instances."""
    for expr in dashboard_exprs(load_dashboard()) + rule_exprs(load_rules()):
        if "jobcast_job_events_total" in expr or "jobcast_job_errors_total" in expr:
            assert expr.startswith("max"), expr


# --- the rules (promtool checks and tests them in the integration test)


def test_rules_cover_the_issue() -> None:
    rules = load_rules()
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert set(alerts) >= {
        "JobcastInstanceDown",
        "JobcastNoInstance",
        "JobcastRedisDown",
        "JobcastReaderLagGrowing",
        "JobcastDeliveryP99Slow",
        "JobcastWorkerLostBurst",
    }
    assert alerts["JobcastDeliveryP99Slow"]["for"] == "5m"
    assert "> 1" in alerts["JobcastDeliveryP99Slow"]["expr"]
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    operations = (ROOT / "docs" / "operations.md").read_text()
    for name in alerts:
        assert f"`{name}`" in operations, f"docs/operations.md does not explain {name}"


def test_every_name_used_is_a_metric_of_this_process() -> None:
    """The same check as the integration test's, on this process's registry."""
    exposition = Exposition(generate_latest().decode())
    used = metric_names(dashboard_exprs(load_dashboard()) + rule_exprs(load_rules()))
    assert [name for name in sorted(used) if not exposition.has(name)] == []


def test_exposition_tells_series_names_from_family_names() -> None:
    exposition = Exposition(generate_latest().decode())
    assert exposition.has("jobcast_events_consumed_total")
    assert not exposition.has("jobcast_events_consumed")  # a counter's family, not a series
    assert exposition.has("jobcast_delivery_delay_seconds_bucket")
    assert exposition.has("jobcast_delivery_delay_seconds_count")
    assert not exposition.has("jobcast_delivery_delay_seconds")
    assert not exposition.has("jobcast_reader_lag_entries_total")
    assert exposition.has("jobcast_auth_failures_total")  # declared, no sample yet
    assert exposition.has("jobcast_transport_info")
    assert not exposition.has("jobcast_no_such_metric")


def test_promql_name_and_matcher_extraction() -> None:
    expr = (
        'max by (code) (rate(jobcast_job_errors_total{code="worker_lost", job="jobcast", '
        'instance=~"$instance"}[5m])) / on() xjobcast_not_a_name + jobcast_x:recorded'
    )
    assert metric_names([expr]) == {"jobcast_job_errors_total"}
    assert equality_matchers([expr]) == {("jobcast_job_errors_total", "code", "worker_lost")}


# --- compose's observability profile


def test_compose_observability_profile_mounts_existing_files() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"], name
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    for name, service in services.items():
        if name not in ("prometheus", "grafana"):
            assert "profiles" not in service, f"{name} must run without a profile"
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for sc in jobs["jobcast"]["static_configs"] for t in sc["targets"]}
    servers = [
        name for name, service in services.items() if "/readyz" in str(service.get("healthcheck"))
    ]
    assert {"notifier-1", "notifier-2", "notifier-3", "api"} <= set(servers)
    for name in servers:  # each directly, on the port its command gives
        command = services[name]["command"]
        port = command[command.index("--port") + 1]
        assert f"{name}:{port}" in targets, f"Prometheus does not scrape {name}"


# --- the metrics behind them


def sample_or_none(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def sample(name: str, **labels: str) -> float:
    return sample_or_none(name, **labels) or 0.0


def counts() -> dict[str, float]:
    found = {s: sample("jobcast_job_events_total", status=s) for s in metrics._JOB_STATES}
    for code in (*events.ERROR_CODES, "unknown"):
        found[code] = sample("jobcast_job_errors_total", code=code)
    return found


def totals_in_redis(redis_client: Any) -> list[dict[str, str]]:
    return [redis_client.hgetall(part.job_totals) for part in space().partitions]


def test_the_publish_script_counts_job_events_by_state_and_errors_by_code(
    redis_client: Any,
) -> None:
    """What a notifier exports once a second: the totals the publish script keeps in Redis
    (every job event published, whichever partition and whether or not anyone reads it)."""
    from notifier.contract.settings import Settings
    from notifier.core.bus import publish_sync

    settings = Settings(_env_file=None, replica_wait_ms=0)
    redis_client.flushall()
    metrics.JOB_TOTALS.update(totals_in_redis(redis_client))
    before = counts()
    batch = [
        events.status_update("j1", "u1", events.QUEUED),
        events.status_update("j1", "u1", events.STARTED),
        events.status_update("j1", "u1", events.PROCESSING, progress=10, seq=1),
        events.status_update("j1", "u1", events.PROCESSING, progress=20, seq=2),
        events.retrying("j1", "u1", 1, retry_in_seconds=2),
        events.job_completed("j1", "u1", {"status": "cancelled"}),
        events.job_error("j2", "u2", 'boom "code":"rejected"', code="worker_lost"),
        events.job_error("j3", "u3", "late", code="time_limit"),
        events.status_update("j4", "u4", events.CANCELLED),
        events.status_update("j4", "u4", events.PROCESSING, seq=9),  # after the end: dropped
        events.system_notification("hello"),  # not a job event
    ]
    for event in batch:
        publish_sync(redis_client, event, settings)
    metrics.JOB_TOTALS.update(totals_in_redis(redis_client))
    after = counts()
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert delta == {
        "queued": 1,
        "started": 1,
        "processing": 2,
        "retrying": 1,
        "completed": 1,
        "failed": 2,
        "cancelled": 1,
        "worker_lost": 1,
        "time_limit": 1,
    }


def test_unknown_states_are_left_out_and_unknown_codes_counted_as_unknown() -> None:
    totals = metrics.JobTotals()
    totals.update([{"queued": "2", "martian": "5", "code:martian": "1"}, {"code:rejected": "3"}])
    assert totals.states["queued"] == 2 and "martian" not in totals.states
    assert totals.codes["unknown"] == 1 and totals.codes["rejected"] == 3


def test_the_counters_stay_monotonic_when_redis_loses_the_totals() -> None:
    totals = metrics.JobTotals()
    totals.update([{"queued": "5", "since": "1"}, {"queued": "2", "since": "1"}])
    totals.update([{"queued": "9", "since": "1"}, {"queued": "2", "since": "1"}])  # +4
    assert totals.states["queued"] == 11
    totals.update([{"queued": "1", "since": "1"}, {}])  # down (lost), and gone: afresh
    assert totals.states["queued"] == 12
    totals.update([{"queued": "1", "since": "1"}, {"queued": "2", "since": "7"}])
    assert totals.states["queued"] == 14
    # Lost and counted up to the same figure between two reads: the new `since` tells.
    totals.update([{"queued": "1", "since": "1"}, {"queued": "2", "since": "9"}])
    assert totals.states["queued"] == 16


def test_labelled_series_exist_before_any_event() -> None:
    """rate() and increase() miss a series' first increment: they start at 0."""
    for state in ("queued", "processing", "completed", "failed", "cancelled"):
        assert sample_or_none("jobcast_job_events_total", status=state) is not None, state
    assert sample_or_none("jobcast_job_errors_total", code="worker_lost") is not None
    assert sample_or_none("jobcast_client_errors_total", code="rate_limited") is not None


async def test_a_slow_consumer_close_is_counted_once() -> None:
    closed: list[tuple[int, str]] = []

    async def write(message: dict[str, Any]) -> None:
        raise AssertionError("nothing is written: the outbox is not started")

    async def close(code: int, reason: str) -> None:
        closed.append((code, reason))

    before = sample("jobcast_slow_consumer_closes_total")
    outbox = Outbox(write, close, 250)
    done = {"type": "job_completed", "jobId": "a"}
    assert outbox.put(done, 100) and outbox.put(done, 100)
    assert not outbox.put(done, 100)  # past the limit: closing as a slow consumer
    assert not outbox.put(done, 100)  # already closing: not counted again
    assert sample("jobcast_slow_consumer_closes_total") - before == 1
    outbox.start()
    await outbox.done()
    assert closed == [(1008, SLOW_CONSUMER)]


def test_redis_up_is_unknown_until_a_notifier_checks() -> None:
    """NaN, not 0, in a process whose notifier never ran (the REST API alone): 0 would read
    as Redis down (JobcastRedisDown compares == 0, which is false for NaN)."""
    code = (
        "from prometheus_client import REGISTRY\n"
        "import notifier.observability.metrics\n"
        "print(REGISTRY.get_sample_value('jobcast_redis_up'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "nan"
