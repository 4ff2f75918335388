"""Channel messages without processes: the builder, the hub's routing (channel subscribers;
``ops`` subscribers also get every ``job_error``, each connection once), the record of who
held a channel, ``workers.notify()``'s refusals and hand-off, the REST body's validation.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from api.errors import ApiError
from api.routes.connections import ChannelBroadcast, broadcast_channel
from notifier.contract import events
from notifier.contract.events import CHANNEL_DATA_MAX_BYTES, Event, StreamEvent
from notifier.contract.keys import keyspace
from notifier.contract.settings import get_settings
from notifier.core.hub import Connection, Hub
from notifier.edge.auth import Principal
from tests.support.env import free_port

ALICE, BOB, ADMIN, ADMIN2 = "1", "bob-2", "admin-9", "admin-10"


class Client:
    def __init__(self, hub: Hub, name: str, user: str, *, admin: bool = False) -> None:
        principal = Principal(user, user, None, ("ADMIN",) if admin else (), float("inf"))
        self.sent: list[dict[str, Any]] = []
        self.conn = Connection(name, principal, "native", self._send, lambda c, r: None)
        self.hub = hub
        hub.add(self.conn)

    def _send(self, message: dict[str, Any], size: int) -> bool:
        self.sent.append(message)
        return True

    def join(self, channel: str) -> Client:
        self.hub.join_channel(self.conn, channel)
        return self

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


def stream(event_id: str, event: Event) -> StreamEvent:
    """``event`` as read back from the stream (the fields the publish script writes)."""
    return StreamEvent.from_entry(
        event_id,
        {
            "r": event.route,
            "t": event.type,
            "u": event.user_id,
            "j": event.job_id,
            "c": event.channel,
            "p": events.dumps(event.message),
        },
    )


def failed(
    event_id: str, job_id: str = "job-1", user: str = ALICE, code: str = "task_failed"
) -> StreamEvent:
    return stream(event_id, events.job_error(job_id, user, "boom", code=code))


@pytest.fixture
def hub() -> Hub:
    return Hub(keyspace(1))


# --- the builder


def test_channel_message_shape() -> None:
    event = events.channel_message("ops", "disk full", "warning", {"host": "db-1"})
    assert event.route == "channel" and event.channel == "ops" and not event.job_id
    message = dict(event.message)
    assert isinstance(message.pop("timestamp"), int)
    assert message == {
        "type": "channel_message",
        "channel": "ops",
        "message": "disk full",
        "level": "warning",
        "data": {"host": "db-1"},
    }
    assert events.channel_message("notifications", "hi").message["data"] == {}


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("nope", "x"), "unknown channel"),
        (("ops", "x", "loud"), "unknown level"),
        (("ops", ""), "non-empty"),
        (("ops", "x" * 2001), "longer than"),
        (("ops", "x", "info", {"blob": "x" * CHANNEL_DATA_MAX_BYTES}), "at most"),
        (("ops", "x", "info", ["not", "an", "object"]), "JSON object"),
        (("ops", "x", "info", {"n": float("nan")}), "JSON compliant"),
    ],
)
def test_channel_message_refuses_bad_input(args: tuple[Any, ...], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        events.channel_message(*args)


# --- routing


def test_channel_message_goes_to_its_subscribers_only(hub: Hub) -> None:
    alice = Client(hub, "a1", ALICE).join("notifications")
    alice_other_tab = Client(hub, "a2", ALICE)
    bob = Client(hub, "b1", BOB).join("maintenance")
    hub.dispatch([stream("5-0", events.channel_message("notifications", "hello"))])
    assert alice.types() == ["channel_message"]
    assert alice.sent[0]["eventId"] == "5-0" and alice.sent[0]["message"] == "hello"
    assert alice_other_tab.sent == [] and bob.sent == []


def test_ops_subscribers_get_every_job_error_unchanged(hub: Hub) -> None:
    owner = Client(hub, "a1", ALICE)
    ops = Client(hub, "adm", ADMIN, admin=True).join("ops")
    admin_not_ops = Client(hub, "adm2", ADMIN2, admin=True)
    bob = Client(hub, "b1", BOB)
    lost = failed("7-0", job_id="job-2", user=BOB, code="worker_lost")
    hub.dispatch([failed("6-0"), lost])
    assert [m["jobId"] for m in ops.sent] == ["job-1", "job-2"]
    assert ops.sent[1] == lost.message() == bob.sent[0]  # what the owner gets, unchanged
    assert [m["jobId"] for m in owner.sent] == ["job-1"]
    assert admin_not_ops.sent == []


def test_ops_subscribers_get_nothing_else_of_other_users_jobs(hub: Hub) -> None:
    ops = Client(hub, "adm", ADMIN, admin=True).join("ops")
    Client(hub, "a1", ALICE)
    hub.dispatch(
        [
            stream("1-0", events.status_update("job-1", ALICE, "processing", progress=5)),
            stream("2-0", events.job_completed("job-1", ALICE, {"ok": True})),
            stream("3-0", events.status_update("job-1", ALICE, "cancelled")),
        ]
    )
    assert ops.sent == []


def test_owner_subscribed_to_ops_and_to_the_job_gets_the_error_once(hub: Hub) -> None:
    both = Client(hub, "adm", ADMIN, admin=True).join("ops")
    same_user_other_tab = Client(hub, "adm-b", ADMIN, admin=True)
    hub.watch_job(both.conn, "job-1", 0)
    hub.open_job(
        both.conn,
        "job-1",
        {"type": "job_status_update", "jobId": "job-1", "eventId": "1-0", "snapshot": True},
    )
    event = failed("2-0", user=ADMIN)
    recipients = list(hub.recipients(event))
    assert sorted(c.id for c in recipients) == ["adm", "adm-b"]
    hub.dispatch([event, event])  # read twice (a reader retry): still once
    assert both.types() == ["job_status_update", "job_error"]
    assert same_user_other_tab.types() == ["job_error"]


def test_ops_subscriber_who_left_gets_no_more_errors(hub: Hub) -> None:
    ops = Client(hub, "adm", ADMIN, admin=True).join("ops")
    hub.leave_channel(ops.conn, "ops")
    hub.dispatch([failed("2-0")])
    assert ops.sent == []


def test_progress_routing_does_not_look_at_ops(hub: Hub) -> None:
    Client(hub, "adm", ADMIN, admin=True).join("ops")
    event = stream("1-0", events.status_update("job-1", ALICE, "processing", progress=5))
    assert list(hub.recipients(event)) == []


def test_hub_tells_who_held_the_channel(hub: Hub) -> None:
    seen: list[tuple[str, set[str]]] = []
    hub.on_channel = lambda event, users: seen.append((event.event_id, users))
    Client(hub, "a1", ALICE).join("notifications")
    Client(hub, "a2", ALICE).join("notifications")
    Client(hub, "adm", ADMIN, admin=True).join("notifications")
    Client(hub, "b1", BOB)
    hub.dispatch(
        [
            stream("5-0", events.channel_message("notifications", "hello")),
            stream("6-0", events.channel_message("ops", "nobody listens")),
            failed("7-0"),
        ]
    )
    assert seen == [("5-0", {ALICE, ADMIN})]


def test_hub_tells_who_got_a_job_error_through_ops(hub: Hub) -> None:
    seen: list[tuple[str, set[str]]] = []
    hub.on_channel = lambda event, users: seen.append((event.event_id, users))
    Client(hub, "adm", ADMIN, admin=True).join("ops")
    Client(hub, "a1", ALICE)
    hub.dispatch(
        [
            stream("1-0", events.status_update("job-1", ALICE, "processing", progress=5)),
            failed("2-0"),
            stream("3-0", events.job_completed("job-2", ALICE, {})),
        ]
    )
    assert seen == [("2-0", {ADMIN})]  # its id becomes a valid lastEventId for the admin


# --- workers.notify()


def test_notify_refuses_bad_input_without_raising(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import workers
    from workers import publisher

    calls: list[Any] = []
    monkeypatch.setattr(publisher, "call", lambda action, terminal: calls.append(action))
    with caplog.at_level(logging.ERROR, logger="workers.channels"):
        assert workers.notify("nope", "x") is None
        assert workers.notify("ops", "x", level="loud") is None
        assert workers.notify("ops", "x", blob=object()) is None
    assert calls == []
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 3


def test_notify_hands_the_message_to_the_publisher_as_an_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import workers
    from workers import channels, publisher

    published: list[Event] = []

    def call(action: Any, terminal: bool) -> str:
        assert terminal  # kept in the backlog while Redis is away, like a job's outcome
        published.append(action.event)
        return "9-0"

    monkeypatch.setattr(publisher, "call", call)
    assert workers.notify("ops", "disk full", level="critical", host="db-1") == "9-0"
    [event] = published
    assert event.message["data"] == {"host": "db-1"} and event.message["level"] == "critical"
    assert channels.notify is workers.notify


def test_notify_never_raises_even_if_the_publisher_does(monkeypatch: pytest.MonkeyPatch) -> None:
    import workers
    from workers import publisher

    def broken(*_: Any) -> Any:
        raise RuntimeError("no")

    monkeypatch.setattr(publisher, "_current", broken)
    assert workers.notify("ops", "x") is None  # publisher.call logs and answers None


# --- the REST body


def test_rest_body_validation() -> None:
    assert ChannelBroadcast.model_validate({"message": "hi"}).data == {}
    for bad, field in [
        ({"message": ""}, "message"),
        ({"message": "hi", "level": "loud"}, "level"),
        ({"message": "hi", "data": [1]}, "data"),
        ({"message": "hi", "data": {"b": "x" * CHANNEL_DATA_MAX_BYTES}}, "data"),
        ({"message": "hi", "extra": 1}, "extra"),
    ]:
        with pytest.raises(ValidationError) as info:
            ChannelBroadcast.model_validate(bad)
        assert info.value.errors()[0]["loc"][0] == field


async def test_rest_channel_message_is_503_while_redis_is_down() -> None:
    """A real client of a Redis that is not there (nothing listens on its port)."""
    down = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    admin = Principal(ADMIN, ADMIN, None, ("ADMIN",), float("inf"))
    request: Any = SimpleNamespace(
        app=SimpleNamespace(state=SimpleNamespace(settings=get_settings()))
    )
    try:
        with pytest.raises(ApiError) as info:
            await broadcast_channel(admin, "ops", ChannelBroadcast(message="hi"), request, down)
    finally:
        await down.aclose()
    assert (info.value.status, info.value.code) == (503, "unavailable")


async def test_a_refreshed_token_without_the_admin_role_leaves_ops(hub: Hub) -> None:
    from notifier.edge.commands import Commands

    demoted = Principal(ADMIN, ADMIN, None, (), float("inf"))
    verifier: Any = SimpleNamespace(verify=lambda token: demoted)
    sessions: Any = SimpleNamespace(watch=lambda conn: None)
    started: Any = None
    commands = Commands(hub, None, get_settings(), None, verifier, sessions, started)  # type: ignore[arg-type]
    client = Client(hub, "adm", ADMIN, admin=True).join("ops").join("notifications")
    answer = await commands.refresh_token(client.conn, {"token": "t"})
    assert answer["type"] == "token_refreshed"
    assert client.conn.channels == {"notifications"} and "ops" not in hub.by_channel
    hub.dispatch([failed("2-0", user=ALICE)])
    assert [m["type"] for m in client.sent] == ["token_refreshed"]
