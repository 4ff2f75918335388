"""Prometheus metrics of a notifier process."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CONNECTIONS = Gauge(
    "jobcast_connections", "Open client connections on this instance", ["transport"]
)
EVENTS_CONSUMED = Counter("jobcast_events_consumed_total", "Events read from the event stream")
EVENTS_DELIVERED = Counter("jobcast_events_delivered_total", "Messages sent to client connections")
AUTH_FAILURES = Counter(
    "jobcast_auth_failures_total", "Refused connections and requests", ["reason", "transport"]
)
CLIENT_ERRORS = Counter("jobcast_client_errors_total", "Error answers to client messages", ["code"])
DELIVERY_DELAY = Histogram(
    "jobcast_delivery_delay_seconds",
    "From the event's timestamp to its emission to the first recipient",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
READER_LAG = Gauge(
    "jobcast_reader_lag_entries",
    "Stream entries between the event stream's head and this instance's last id (capped)",
)

TRANSPORT = Info(
    "jobcast_transport",
    "The transport path this process serves through: fast (jobcast's own write path) or "
    "stock (the libraries as released)",
)


def metrics_route() -> Route:
    """``GET /metrics`` in the Prometheus text format (at that exact path: no redirect)."""

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, include_in_schema=False)
