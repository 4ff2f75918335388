"""Channel messages (SPEC section 10), against the session's server and worker.

- ``workers.notify()`` from a plain Python process (no Celery) and
  ``POST /api/v1/websocket/broadcast/channel/{name}`` reach the channel's subscribers over
  Socket.IO and the native endpoint, and nobody else.
- The endpoint: ADMIN only (401, 403), 404 ``channel_not_found``, 422 with the field named.
- ``ops`` subscribers get the ``job_error`` of another user's failing job, unchanged.
- Recovery (``lastEventId``) replays a channel message to a user who held a subscription
  to its channel when it was published, and not to one who did not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.helpers import NativeClient, bearer, start_job
from tests.support.keyspace import user_partition
from tests.support.processes import Server, python_output
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

CHANNEL = "/api/v1/websocket/broadcast/channel"


async def joined(client: Any, channel: str) -> Any:
    answer = await client.request("subscribe_channel", channel=channel)
    assert answer == {"type": "subscribed", "channel": channel}, answer
    return client


def notify_from_a_script(*args: str) -> str:
    """Run ``workers.notify(*args, source="script")`` in a fresh Python process; its id."""
    code = (
        "import sys, workers\n"
        f"event_id = workers.notify(*{args!r}, source='script')\n"
        "assert 'workers.app' not in sys.modules, 'notify() built the bundled Celery app'\n"
        "print(event_id)\n"
    )
    return python_output(code)


async def test_notify_from_a_plain_process_reaches_subscribers_only(
    tokens: Any, sio_client: Callable[..., Any], native_client: Callable[..., Any]
) -> None:
    sio_sub = await joined(await sio_client(tokens.alice), "notifications")
    native_sub = await joined(await native_client(tokens.bob), "notifications")
    other_channel = await joined(await native_client(tokens.alice), "maintenance")
    sio_none = await sio_client(tokens.bob)
    native_none = await native_client(tokens.admin)

    event_id = await asyncio.to_thread(
        notify_from_a_script, "notifications", "Reports are ready", "warning"
    )
    assert event_id.count("-") == 1, event_id  # its id in partition 0's stream
    for client in (sio_sub, native_sub):
        msg = await client.wait_for_type("channel_message", message="Reports are ready")
        assert msg == {
            "type": "channel_message",
            "channel": "notifications",
            "message": "Reports are ready",
            "level": "warning",
            "data": {"source": "script"},
            "eventId": msg["eventId"],  # the copy of the user's partition
            "timestamp": msg["timestamp"],
        }
    for client in (other_channel, sio_none, native_none):
        await client.settle()
        assert client.of_type("channel_message") == [], client.describe()


async def test_rest_channel_message_reaches_subscribers_only(
    tokens: Any, http: Any, sio_client: Callable[..., Any], native_client: Callable[..., Any]
) -> None:
    sio_ops = await joined(await sio_client(tokens.admin, transports=["polling"]), "ops")
    native_ops = await joined(await native_client(tokens.admin), "ops")
    not_ops = await joined(await native_client(tokens.alice), "notifications")

    response = await http.post(
        f"{CHANNEL}/ops",
        json={"message": "Queue backlog high", "level": "error", "data": {"queue": "celery"}},
        headers=bearer(tokens.admin),
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["type"] == "channel_message" and data["channel"] == "ops"
    for client in (sio_ops, native_ops):
        msg = await client.wait_for_type("channel_message", eventId=data["eventId"])
        assert (msg["channel"], msg["level"], msg["data"]) == ("ops", "error", {"queue": "celery"})
    await not_ops.settle()
    assert not_ops.of_type("channel_message") == []


async def test_rest_channel_endpoint_refusals(tokens: Any, http: Any) -> None:
    body = {"message": "hello"}
    anonymous = await http.post(f"{CHANNEL}/ops", json=body)
    assert anonymous.status_code == 401
    forbidden = await http.post(f"{CHANNEL}/notifications", json=body, headers=bearer(tokens.bob))
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, "forbidden")
    unknown = await http.post(f"{CHANNEL}/nope", json=body, headers=bearer(tokens.admin))
    assert (unknown.status_code, unknown.json()["code"]) == (404, "channel_not_found")
    for bad, field in [
        ({"message": "hi", "level": "loud"}, "level"),
        ({"message": ""}, "message"),
        ({"level": "info"}, "message"),
        ({"message": "hi", "data": ["not", "an", "object"]}, "data"),
        ({"message": "hi", "data": {"blob": "x" * 20_000}}, "data"),
    ]:
        answer = await http.post(f"{CHANNEL}/ops", json=bad, headers=bearer(tokens.admin))
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["code"] == "validation_error"
        assert [e["field"] for e in answer.json()["errors"]] == [field], answer.text


async def test_ops_receives_another_users_job_error(
    tokens: Any,
    http: Any,
    redis_client: Any,
    sio_client: Callable[..., Any],
    native_client: Callable[..., Any],
) -> None:
    ops = await joined(await native_client(tokens.admin), "ops")
    owner = await sio_client(tokens.alice)
    bystander = await native_client(tokens.bob)
    job_id = await start_job(
        http, tokens.alice, topic="ops", sections=2, secondsPerSection=0.1, failAtSection=1
    )
    seen_by_owner = await owner.wait_for_type("job_error", jobId=job_id, within=40)
    seen_by_ops = await ops.wait_for_type("job_error", jobId=job_id, within=20)
    assert seen_by_ops == seen_by_owner  # unchanged
    await ops.settle()
    assert [m["type"] for m in ops.for_job(job_id)] == ["job_error"]  # no progress, once
    await bystander.settle()
    assert bystander.for_job(job_id) == []

    # Its id is a valid lastEventId for the operator (the last thing their client saw).
    held = user_partition("admin-9").user_channel_events("admin-9")
    event_id = seen_by_ops["eventId"]
    assert await wait_until_async(lambda: redis_client.zscore(held, event_id) is not None, 5)
    again = await native_client(tokens.admin, query={"lastEventId": event_id})
    assert again.messages[0]["recovered"] is True, again.describe()
    assert again.for_job(job_id) == []  # not replayed: it is in its owner's inbox


async def test_recovery_replays_a_channel_message_only_to_a_user_who_held_it(
    server: Server,
    tokens: Any,
    http: Any,
    redis_client: Any,
    sio_client: Callable[..., Any],
    native_client: Callable[..., Any],
) -> None:
    # Alice holds `notifications` in one tab while another of her tabs is away; Bob holds
    # nothing. Both come back with the same lastEventId (a system broadcast both had).
    keeper = await joined(await sio_client(tokens.alice), "notifications")
    alice_tab: NativeClient = await native_client(tokens.alice)
    bob_tab: NativeClient = await joined(await native_client(tokens.bob), "notifications")
    await bob_tab.request("unsubscribe_channel", channel="notifications")

    async def post(path: str, body: dict[str, Any]) -> None:
        response = await http.post(path, json=body, headers=bearer(tokens.admin))
        assert response.status_code == 200, response.text

    async def seen(client: Any, kind: str, message: str) -> str:
        """The id the client got the message with (its partition's copy)."""
        return str((await client.wait_for_type(kind, message=message))["eventId"])

    await post("/api/v1/websocket/broadcast/system", {"message": "before"})
    last = {}
    for user, tab in (("alice", alice_tab), ("bob", bob_tab)):
        last[user] = await seen(tab, "system_notification", "before")
        await tab.close()

    await post(f"{CHANNEL}/notifications", {"message": "while away"})
    await post("/api/v1/websocket/broadcast/system", {"message": "after"})
    held = await seen(keeper, "channel_message", "while away")
    assert await wait_until_async(
        lambda: redis_client.zscore(user_partition("1").user_channel_events("1"), held) is not None,
        within=5,
    )
    assert redis_client.zcard(user_partition("bob-2").user_channel_events("bob-2")) == 0

    alice = await native_client(tokens.alice, query={"lastEventId": last["alice"]})
    bob = await native_client(tokens.bob, query={"lastEventId": last["bob"]})
    after = {}
    for user, client in (("alice", alice), ("bob", bob)):
        assert client.messages[0]["type"] == "connection_established"
        assert client.messages[0]["recovered"] is True, client.describe()
        after[user] = await seen(client, "system_notification", "after")
        await client.settle()
    assert [m.get("eventId") for m in alice.messages[1:] if "eventId" in m] == [
        held,
        after["alice"],
    ]
    assert alice.messages[1]["type"] == "channel_message"
    assert alice.messages[1]["message"] == "while away"
    assert [m.get("eventId") for m in bob.messages[1:] if "eventId" in m] == [after["bob"]]

    # A channel message's id is a lastEventId only for a user who held its channel.
    alice_again = await native_client(tokens.alice, query={"lastEventId": held})
    bob_again = await native_client(tokens.bob, query={"lastEventId": held})
    assert alice_again.messages[0]["recovered"] is True
    assert bob_again.messages[0]["recovered"] is False
