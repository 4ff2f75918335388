"""Bad client messages get an ``error`` with the documented code; the connection stays open."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.helpers import Recorder, Tokens, is_snapshot, is_type, start_job

pytestmark = pytest.mark.integration


async def expect_error(client: Recorder, start: int, code: str, request: str | None) -> None:
    """The next ``error`` after ``start`` has ``code`` (and names ``request`` if given); the
    connection still answers ``ping`` afterwards."""
    error = await client.wait_for(is_type("error"), after=start, what=f"error {code}")
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    if request is not None:
        assert error.get("request") == request, error
    assert (await client.ping())["type"] == "pong"
    assert not client.closed


NATIVE_MALFORMED = [
    ("not JSON", "{oops", None),
    ("binary garbage", "\x00\x01", None),
    ("a JSON array", '["subscribe_job", {"jobId": "x"}]', None),
    ("a JSON number", "42", None),
    ("a JSON string", '"ping"', None),
    ("no type", '{"jobId": "x"}', None),
    ("unknown type", '{"type": "launch_missiles"}', "launch_missiles"),
    ("type not a string", '{"type": 7}', None),
    ("subscribe_job without jobId", '{"type": "subscribe_job"}', "subscribe_job"),
    ("jobId not a string", '{"type": "subscribe_job", "jobId": 5}', "subscribe_job"),
    ("jobId empty", '{"type": "subscribe_job", "jobId": ""}', "subscribe_job"),
    ("subscribe_channel without channel", '{"type": "subscribe_channel"}', "subscribe_channel"),
    ("ack with a bogus eventId", '{"type": "ack", "eventId": "yesterday"}', "ack"),
]


async def test_native_malformed_messages(native_client: Any, tokens: Tokens) -> None:
    client = await native_client(tokens.alice)
    for case, text, request in NATIVE_MALFORMED:
        start = client.mark()
        await client.send_raw(text)
        try:
            await expect_error(client, start, "bad_request", request)
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from exc


SIO_MALFORMED = [
    ("a string payload", "subscribe_job", "job-1"),
    ("a list payload", "subscribe_job", ["job-1"]),
    ("a number payload", "subscribe_channel", 42),
    ("unknown event", "launch_missiles", {}),
    ("subscribe_job without jobId", "subscribe_job", {}),
    ("jobId not a string", "subscribe_job", {"jobId": {"id": 1}}),
    ("unsubscribe_channel without channel", "unsubscribe_channel", {}),
]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_socketio_malformed_messages(sio_client: Any, tokens: Tokens, transport: str) -> None:
    client = await sio_client(tokens.alice, transports=[transport])
    for case, event, payload in SIO_MALFORMED:
        start = client.mark()
        await client.sio.emit(event, payload)
        try:
            await expect_error(client, start, "bad_request", event)
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from exc


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_socketio_ack_callbacks_get_the_answer(
    sio_client: Any, http: Any, tokens: Tokens, transport: str
) -> None:
    client = await sio_client(tokens.alice, transports=[transport])
    job_id = await start_job(http, tokens.alice, sections=1, secondsPerSection=0)
    start = client.mark()
    assert await client.call("subscribe_job", {"jobId": job_id}) == {
        "type": "subscribed",
        "jobId": job_id,
    }
    await client.wait_for(is_snapshot(job_id), after=start, what="the snapshot")
    bob = await sio_client(tokens.bob, transports=[transport])
    refused = await bob.call("subscribe_job", {"jobId": job_id})
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    pong = await client.call("ping")
    assert pong["type"] == "pong" and isinstance(pong["timestamp"], int)
    bad = await client.call("subscribe_job", "not an object")
    assert (bad["type"], bad["code"], bad["request"]) == ("error", "bad_request", "subscribe_job")
    missing = await client.call("subscribe_job", {"jobId": "no-such-job"})
    assert (missing["type"], missing["code"]) == ("error", "job_not_found")
    joined = await client.call("subscribe_channel", {"channel": "notifications"})
    assert joined == {"type": "subscribed", "channel": "notifications"}


async def test_unknown_job_channel_and_forbidden_channel(any_client: Any, tokens: Tokens) -> None:
    client = await any_client(tokens.alice)
    cases = [
        ("subscribe_job", {"jobId": "no-such-job"}, "job_not_found"),
        ("subscribe_channel", {"channel": "gossip"}, "channel_not_found"),
        ("subscribe_channel", {"channel": "ops"}, "forbidden"),
    ]
    for kind, fields, code in cases:
        start = client.mark()
        await client.send(kind, **fields)
        await expect_error(client, start, code, kind)
    assert client.for_job("no-such-job") == []


async def test_channel_subscriptions(any_client: Any, tokens: Tokens) -> None:
    user = await any_client(tokens.alice)
    for channel in ("notifications", "maintenance"):
        assert await user.request("subscribe_channel", channel=channel) == {
            "type": "subscribed",
            "channel": channel,
        }
        assert await user.request("unsubscribe_channel", channel=channel) == {
            "type": "unsubscribed",
            "channel": channel,
        }
    assert await user.request("unsubscribe_job", jobId="never-subscribed") == {
        "type": "unsubscribed",
        "jobId": "never-subscribed",
    }

    admin = await any_client(tokens.admin)
    assert await admin.request("subscribe_channel", channel="ops") == {
        "type": "subscribed",
        "channel": "ops",
    }
