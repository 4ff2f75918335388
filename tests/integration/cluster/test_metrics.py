"""``GET /metrics`` after real traffic on the session's server, parsed with prometheus-client's
own parser: every jobcast metric of SPEC/issue 5 is there and moved by the right amount.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support.fault_helpers import parse_metrics
from tests.support.helpers import (
    bearer,
    connect_native,
    connect_sio,
    is_terminal,
    refused_sio,
    start_job,
)
from tests.support.keyspace import events_in_streams
from tests.support.processes import Server

pytestmark = pytest.mark.integration

#: The users connected here: the notifier reads (and consumes) only their partitions.
READ_BY_THIS_TEST = ("1", "bob-2", "carol")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics", follow_redirects=True)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse_metrics(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_metrics_after_traffic(
    http: httpx.AsyncClient, server: Server, redis_client: Any, tokens: Any
) -> None:
    stream_before = events_in_streams(redis_client, READ_BY_THIS_TEST)
    before = await scrape(http)
    for name in (
        "jobcast_events_consumed_total",
        "jobcast_events_delivered_total",
        "jobcast_delivery_delay_seconds_count",
        "jobcast_reader_lag_entries",
    ):
        assert (name, ()) in before, f"{name} is not exposed"
    for transport in ("websocket", "polling", "native"):
        assert ("jobcast_connections", (("transport", transport),)) in before

    ws = await connect_sio(server.url, tokens.alice, ["websocket"])
    poll = await connect_sio(server.url, tokens.bob, ["polling"])
    native = await connect_native(server.native_url, tokens.make("carol"))
    clients = [ws, poll, native]
    try:
        for client in clients:
            await client.wait_for_type("connection_established")
        during = await scrape(http)
        for transport in ("websocket", "polling", "native"):
            assert delta(before, during, "jobcast_connections", transport=transport) == 1, transport

        # Refusals, by reason and transport.
        await refused_sio(server.url, tokens.bad_signature(), ["websocket"])
        refused = await connect_native(server.native_url, tokens.expired())
        await refused.wait_closed()
        assert refused.close_code == 4401
        assert (await http.get("/api/v1/jobs")).status_code == 401
        # Client errors, by code.
        await native.send_raw("not json")
        await native.wait_for_type("error", code="bad_request")
        answer = await ws.request("subscribe_job", jobId="no-such-job")
        assert answer["code"] == "job_not_found"

        # A job, watched by its owner; then a broadcast that everyone gets, last.
        job_id = await start_job(http, tokens.alice, topic="metrics", sections=2,
                                 secondsPerSection=0.2)  # fmt: skip
        await ws.request("subscribe_job", jobId=job_id)
        await ws.wait_for(is_terminal(job_id), within=40, what="the job's end")
        sent = await http.post(
            "/api/v1/websocket/broadcast/system",
            json={"message": "metrics marker"},
            headers=bearer(tokens.admin),
        )
        assert sent.status_code == 200, sent.text
        for client in clients:
            await client.wait_for_type("system_notification", message="metrics marker")
            await client.settle(0.2)
        stream_after = events_in_streams(redis_client, READ_BY_THIS_TEST)

        # The reader lag is sampled once a second: wait (bounded) for a fresh zero.
        after = await scrape(http)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while value(after, "jobcast_reader_lag_entries") != 0 and loop.time() < deadline:
            await asyncio.sleep(0.2)
            after = await scrape(http)
        assert value(after, "jobcast_reader_lag_entries") == 0

        consumed = delta(before, after, "jobcast_events_consumed_total")
        assert consumed == stream_after - stream_before, (consumed, stream_after, stream_before)
        delivered = sum(1 for c in clients for m in c.messages if "eventId" in m)
        assert delta(before, after, "jobcast_events_delivered_total") == delivered
        batches = delta(before, after, "jobcast_delivery_delay_seconds_count")
        assert 1 <= batches <= consumed
        assert delta(before, after, "jobcast_delivery_delay_seconds_sum") >= 0
        buckets = sorted(
            (float(dict(labels)["le"]), v)
            for (name, labels), v in after.items()
            if name == "jobcast_delivery_delay_seconds_bucket"
        )
        assert [v for _, v in buckets] == sorted(v for _, v in buckets), "buckets not cumulative"
        assert buckets[-1][1] == value(after, "jobcast_delivery_delay_seconds_count")

        for reason, transport in (
            ("invalid_token", "socketio"),
            ("token_expired", "native"),
            ("auth_required", "rest"),
        ):
            moved = delta(
                before, after, "jobcast_auth_failures_total", reason=reason, transport=transport
            )
            assert moved == 1, (reason, transport, moved)
        for code in ("bad_request", "job_not_found"):
            assert delta(before, after, "jobcast_client_errors_total", code=code) == 1, code
    finally:
        for client in clients:
            await client.close()
