"""The dashboard and the alert rules against a running server: every jobcast metric name
they use is on its ``/metrics`` (and every label value they pick), the gauges and counters
added for them move with a real job; promtool checks and unit-tests the rules.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import httpx
import pytest

from tests.support.env import missing_tool
from tests.support.helpers import start_job, wait_job_status
from tests.support.observability import (
    ALERT_TESTS,
    ALERTS,
    PROMETHEUS_CONFIG,
    Exposition,
    dashboard_exprs,
    equality_matchers,
    load_dashboard,
    load_rules,
    metric_names,
    promtool,
    rule_exprs,
)

pytestmark = pytest.mark.integration


async def scrape(http: httpx.AsyncClient) -> Exposition:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    return Exposition(response.text)


def value(exposition: Exposition, name: str, **labels: str) -> float:
    return exposition.value(name, **labels) or 0.0


async def test_every_metric_name_used_is_on_the_servers_metrics(http: httpx.AsyncClient) -> None:
    exposition = await scrape(http)
    exprs = dashboard_exprs(load_dashboard()) + rule_exprs(load_rules())
    used = metric_names(exprs)
    assert len(used) >= 10, used
    missing = sorted(name for name in used if not exposition.has(name))
    assert missing == [], f"used by the dashboard or the rules, not on /metrics: {missing}"
    unmatched = sorted(m for m in equality_matchers(exprs) if not exposition.has_label(*m))
    assert unmatched == [], f"label values with no series on /metrics: {unmatched}"


async def test_a_job_moves_the_job_metrics_and_redis_is_up(
    http: httpx.AsyncClient, tokens: Any
) -> None:
    before = await scrape(http)
    job_id = await start_job(
        http, tokens.alice, topic="observability", sections=3, secondsPerSection=0.8
    )
    # jobcast_jobs_running is read from Redis at each scrape: seen while the job runs.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    running = 0.0
    while loop.time() < deadline and running < 1:
        running = value(await scrape(http), "jobcast_jobs_running")
        await asyncio.sleep(0.2)
    assert running >= 1, "jobcast_jobs_running never counted the running job"
    await wait_job_status(http, tokens.alice, job_id, {"completed"}, within=40)

    def moved(after: Exposition, status: str) -> float:
        return value(after, "jobcast_job_events_total", status=status) - value(
            before, "jobcast_job_events_total", status=status
        )

    # At least: a job still running from an earlier test may add its own events.
    deadline = loop.time() + 5
    after = await scrape(http)
    while loop.time() < deadline and moved(after, "completed") < 1:
        await asyncio.sleep(0.2)
        after = await scrape(http)
    for status in ("queued", "started", "processing", "completed"):
        assert moved(after, status) >= 1, status
    assert value(after, "jobcast_redis_up") == 1


def run_promtool(*args: str) -> None:
    tool = promtool()
    if tool is None:
        missing_tool("promtool is missing (Debian: apt-get install prometheus)")
    done = subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=120, cwd=ALERTS.parent
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def test_promtool_checks_the_rules() -> None:
    run_promtool("check", "rules", str(ALERTS))


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """Each alert fires on the trouble it names, with the labels and text an operator sees."""
    run_promtool("test", "rules", str(ALERT_TESTS))


def test_promtool_checks_the_compose_prometheus_config() -> None:
    run_promtool("check", "config", str(PROMETHEUS_CONFIG))
