"""Prometheus metrics of a notifier process.

The dashboard (``deploy/grafana/jobcast.json``) and the alert rules
(``deploy/prometheus/alerts.yml``) use these names; a test checks that every name they use
is on a running server's ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from notifier.contract.events import (
    COMPLETED,
    ERROR_CODES,
    FAILED,
    STATUSES,
)

CONNECTIONS = Gauge(
    "jobcast_connections", "Open client connections on this instance", ["transport"]
)


class HotCounter(Collector):
    """A process-wide counter that the delivery path adds to once per batch: ``value += n``
    is one integer addition (only the event loop's thread adds; no lock, no call into
    prometheus_client per event), read at each scrape."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.value = 0

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


EVENTS_CONSUMED = HotCounter(
    "jobcast_events_consumed_total",
    "Events read from the event streams of the partitions this instance reads",
)
EVENTS_DELIVERED = HotCounter(
    "jobcast_events_delivered_total", "Messages sent to client connections"
)
REGISTRY.register(EVENTS_CONSUMED)
REGISTRY.register(EVENTS_DELIVERED)
AUTH_FAILURES = Counter(
    "jobcast_auth_failures_total", "Refused connections and requests", ["reason", "transport"]
)
ROUTING_HINTS = Counter(
    "jobcast_routing_hints_total",
    "Accepted connections by their routing hint uid against the token's user: match, "
    "missing or mismatch (served all the same, perhaps by a notifier that is not the user's)",
    ["hint"],
)
for _hint in ("match", "missing", "mismatch"):
    ROUTING_HINTS.labels(_hint)
CLIENT_ERRORS = Counter("jobcast_client_errors_total", "Error answers to client messages", ["code"])
# Rate-limited clients are CLIENT_ERRORS{code="rate_limited"} (socket messages and REST
# 429s): exposed at 0 from the start, so that rate() and increase() see the first one.
CLIENT_ERRORS.labels("rate_limited")
DELIVERY_DELAY = Histogram(
    "jobcast_delivery_delay_seconds",
    "From the event's timestamp to its emission to the first recipient",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
READER_LAG = Gauge(
    "jobcast_reader_lag_entries",
    "Stream entries after this instance's last ids in the partitions it reads (capped)",
)
READER_PARTITIONS = Gauge(
    "jobcast_reader_partitions",
    "Partitions this instance reads: those of its connected users, of the jobs they "
    "subscribe to, and all of them while an ops subscriber is connected",
)

SLOW_CONSUMER_CLOSES = Counter(
    "jobcast_slow_consumer_closes_total",
    "Connections closed because their send queue passed its byte limit (slow_consumer)",
)
JOBS_RUNNING = Gauge(
    "jobcast_jobs_running",
    "Started jobs holding a run lease (cluster-wide, read from Redis by every instance)",
)
REDIS_UP = Gauge(
    "jobcast_redis_up",
    "1 when this instance's last Redis round trip (once a second) succeeded, else 0",
)
# Unknown until the notifier's first check: a process without a notifier (the REST API
# alone) never reports 0, which would read as Redis down.
REDIS_UP.set(math.nan)

ASYNCIO_TASKS = Gauge(
    "jobcast_asyncio_tasks",
    "asyncio tasks alive in this process's event loop, counted at each scrape (on the fast "
    "transport one per open WebSocket, the server's own, plus a few of the notifier's)",
)


def _asyncio_tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped from a thread without a running loop
        return math.nan


ASYNCIO_TASKS.set_function(_asyncio_tasks)

TRANSPORT = Info(
    "jobcast_transport",
    "The transport path this process serves through: fast (jobcast's own write path) or "
    "stock (the libraries as released)",
)

_JOB_STATES = (*STATUSES, COMPLETED, FAILED)
_ERROR_CODES = (*ERROR_CODES, "unknown")


class JobTotals(Collector):
    """``jobcast_job_events_total{status}`` and ``jobcast_job_errors_total{code}``: every job
    event published, cluster-wide. The publish script counts them in each partition's
    totals hash (``keys.Partition.job_totals``, with ``since``: when those totals started);
    a notifier reads them once a second (:meth:`update`) and adds what each partition's
    grew by, so every instance's counters grow alike (across instances take ``max()``, not
    ``sum()``) and stay monotonic when Redis loses a partition's totals (a flush, a
    failover): a new ``since``, or a count that went down, starts that partition afresh.
    A process without a notifier reports 0."""

    def __init__(self) -> None:
        self.states = dict.fromkeys(_JOB_STATES, 0)
        self.codes = dict.fromkeys(_ERROR_CODES, 0)
        self._seen: list[Mapping[str, str]] = []

    def update(self, hashes: Sequence[Mapping[str, str]]) -> None:
        """Read the partitions' totals hashes, in partition order (an unknown state is left
        out, an unknown error code counts as ``unknown``)."""
        seen = self._seen if len(self._seen) == len(hashes) else [{} for _ in hashes]
        for totals, before in zip(hashes, seen, strict=True):
            fresh = (totals or {}).get("since") != before.get("since")
            for name, raw in (totals or {}).items():
                if name == "since":
                    continue
                count = int(raw)
                last = 0 if fresh else int(before.get(name, 0))
                self._add(name, count - last if count >= last else count)
        self._seen = [dict(totals or {}) for totals in hashes]

    def _add(self, name: str, grown: int) -> None:
        if name.startswith("code:"):
            code = name[len("code:") :]
            self.codes[code if code in self.codes else "unknown"] += grown
        elif name in self.states:
            self.states[name] += grown

    def collect(self) -> Iterator[Metric]:
        yield _counters(
            "jobcast_job_events",
            "Job events published (cluster-wide, from Redis), by the job state they carry "
            "(processing: each progress report)",
            "status",
            self.states,
        )
        yield _counters(
            "jobcast_job_errors",
            "job_error events published (cluster-wide, from Redis), by data.code "
            "(worker_lost: a lost worker)",
            "code",
            self.codes,
        )


def _counters(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in counts.items():
        family.add_metric([value], count)
    return family


JOB_TOTALS = JobTotals()
REGISTRY.register(JOB_TOTALS)

log = logging.getLogger(__name__)

#: What reads this process's figures from Redis for a scrape (a notifier adds its own:
#: the job figures and the reader's lag), so that nothing is read between scrapes; each
#: has :data:`SCRAPE_REFRESH_SECONDS`, after which the scrape answers with what it had.
SCRAPE_REFRESH: list[Callable[[], Awaitable[None]]] = []
SCRAPE_REFRESH_SECONDS = 2.0


async def refresh_for_scrape() -> None:
    for refresh in list(SCRAPE_REFRESH):
        try:
            await asyncio.wait_for(refresh(), SCRAPE_REFRESH_SECONDS)
        except Exception as exc:  # the scrape still answers, with the figures it had
            log.warning("figures from Redis not read for a scrape", extra={"error": repr(exc)})


def metrics_route() -> Route:
    """``GET /metrics`` in the Prometheus text format (at that exact path: no redirect)."""

    async def metrics(_: Request) -> Response:
        await refresh_for_scrape()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, include_in_schema=False)
