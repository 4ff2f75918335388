"""The routing core (no processes): who gets which event, once, in order.

Connections are real :class:`notifier.core.hub.Connection` objects whose ``send`` appends to a
list, fed with :class:`StreamEvent` values built by the real event builders.
"""

from __future__ import annotations

from typing import Any

import pytest

from notifier.contract import events
from notifier.contract.events import Event, StreamEvent
from notifier.contract.keys import keyspace
from notifier.core.hub import Connection, Hub
from notifier.edge.auth import Principal

ALICE, BOB, ADMIN = "1", "bob-2", "admin-9"


class Client:
    """A connection registered in ``hub`` that records what it is sent."""

    def __init__(
        self, hub: Hub, name: str, user: str, *, admin: bool = False, hold: bool = False
    ) -> None:
        principal = Principal(user, user, None, ("ADMIN",) if admin else (), float("inf"))
        self.sent: list[dict[str, Any]] = []
        self.closed: list[tuple[int, str]] = []
        self.conn = Connection(
            conn_id=name,
            principal=principal,
            transport="native",
            send=self._send,
            close=lambda code, reason: self.closed.append((code, reason)),
        )
        self.hub = hub
        hub.add(self.conn, hold=hold)  # hold: a (re)connect whose replay is being read

    def _send(self, message: dict[str, Any], size: int) -> bool:
        self.sent.append(message)
        return True

    def subscribe(self, job_id: str, snapshot_id: str, status: str = "processing") -> None:
        """What the protocol does: hold live events, read the state, send the snapshot."""
        self.hub.watch_job(self.conn, job_id, 0)
        self.hub.open_job(self.conn, job_id, snapshot(job_id, snapshot_id, status))

    @property
    def ids(self) -> list[str]:
        return [m["eventId"] for m in self.sent if "eventId" in m and not m.get("snapshot")]

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


def stream(event_id: str, event: Event, channel: str = "") -> StreamEvent:
    """``event`` as the reader gets it back from the stream with id ``event_id``."""
    return StreamEvent.from_entry(
        event_id,
        {
            "r": "channel" if channel else event.route,
            "t": event.type,
            "u": event.user_id,
            "j": event.job_id,
            "c": channel,
            "p": events.dumps(event.message),
        },
    )


def progress(
    event_id: str, job_id: str = "job-1", user: str = ALICE, value: int = 50
) -> StreamEvent:
    return stream(event_id, events.status_update(job_id, user, "processing", progress=value))


def completed(event_id: str, job_id: str = "job-1", user: str = ALICE) -> StreamEvent:
    return stream(event_id, events.job_completed(job_id, user, {"success": True}))


def snapshot(job_id: str, event_id: str, status: str = "processing") -> dict[str, Any]:
    return {
        "type": "job_status_update",
        "jobId": job_id,
        "eventId": event_id,
        "timestamp": 0,
        "data": {"status": status},
        "snapshot": True,
    }


@pytest.fixture
def hub() -> Hub:
    return Hub(keyspace(1))


def test_progress_goes_to_the_job_subscribers_only(hub: Hub) -> None:
    subscriber = Client(hub, "a1", ALICE)
    owner_elsewhere = Client(hub, "a2", ALICE)
    stranger = Client(hub, "b1", BOB)
    subscriber.subscribe("job-1", "1-0")
    event = progress("2-0")

    assert set(hub.recipients(event)) == {subscriber.conn}
    hub.dispatch([event])
    assert subscriber.ids == ["2-0"]
    assert owner_elsewhere.sent == [] and stranger.sent == []


def test_outcome_goes_to_every_owner_connection_and_to_subscribers(hub: Hub) -> None:
    owner_a = Client(hub, "a1", ALICE)
    owner_b = Client(hub, "a2", ALICE)
    admin = Client(hub, "adm", ADMIN, admin=True)
    stranger = Client(hub, "b1", BOB)
    admin.subscribe("job-1", "1-0")
    event = completed("2-0")

    assert set(hub.recipients(event)) == {owner_a.conn, owner_b.conn, admin.conn}
    hub.dispatch([event])
    for client in (owner_a, owner_b, admin):
        assert client.ids == ["2-0"]
    assert stranger.sent == []


def test_owner_who_subscribed_gets_the_outcome_once(hub: Hub) -> None:
    owner = Client(hub, "a1", ALICE)
    owner.subscribe("job-1", "1-0")
    hub.dispatch([progress("2-0"), completed("3-0")])
    assert owner.ids == ["2-0", "3-0"]
    assert owner.types().count("job_completed") == 1


def test_cancelled_goes_to_the_owner_without_subscription(hub: Hub) -> None:
    owner = Client(hub, "a1", ALICE)
    hub.dispatch([stream("2-0", events.status_update("job-1", ALICE, "cancelled"))])
    assert owner.ids == ["2-0"]


def test_broadcasts_and_channels(hub: Hub) -> None:
    alice = Client(hub, "a1", ALICE)
    bob = Client(hub, "b1", BOB)
    admin = Client(hub, "adm", ADMIN, admin=True)
    hub.join_channel(admin.conn, "ops")
    hub.join_channel(bob.conn, "notifications")

    hub.dispatch([stream("5-0", events.system_notification("hello", "warning"))])
    hub.dispatch([stream("6-0", events.system_notification("ops only"), channel="ops")])
    hub.dispatch([stream("7-0", events.system_notification("news"), channel="notifications")])

    assert alice.ids == ["5-0"]
    assert bob.ids == ["5-0", "7-0"]
    assert admin.ids == ["5-0", "6-0"]
    hub.leave_channel(bob.conn, "notifications")
    hub.dispatch([stream("8-0", events.system_notification("again"), channel="notifications")])
    assert bob.ids == ["5-0", "7-0"]


def test_unknown_route_reaches_nobody(hub: Hub) -> None:
    Client(hub, "a1", ALICE)
    odd = StreamEvent.from_entry("1-0", {"r": "sideways", "t": "x", "p": "{}"})
    assert list(hub.recipients(odd)) == []
    hub.dispatch([odd])
    assert hub.delivered == 0


def test_events_not_newer_than_the_cursor_are_skipped(hub: Hub) -> None:
    client = Client(hub, "a1", ALICE)
    client.subscribe("job-1", "10-5")
    hub.dispatch([progress("9-0"), progress("10-5"), progress("10-6"), progress("11-0")])
    hub.dispatch([progress("10-9"), completed("11-0")])  # replayed or out of order
    assert client.ids == ["10-6", "11-0"]
    assert client.sent[0]["snapshot"] is True, "the snapshot answers the subscribe first"


def test_a_terminal_event_is_final_for_the_connection(hub: Hub) -> None:
    """After a job's terminal event a connection gets nothing more of the job, not even a
    second terminal event with a newer id (what a producer's retry after a Redis failover
    that lost the first copy publishes); nor after a subscription's terminal snapshot."""
    subscriber = Client(hub, "a1", ALICE)
    subscriber.subscribe("job-1", "1-0")
    hub.dispatch([progress("2-0"), completed("3-0")])
    hub.dispatch([completed("9-0"), progress("9-1")])  # the republished end, then anything
    assert subscriber.ids == ["2-0", "3-0"]

    late = Client(hub, "a2", ALICE)
    late.subscribe("job-2", "5-0", status="completed")
    hub.dispatch([completed("9-2", job_id="job-2")])
    assert late.types() == ["job_status_update"], "only the terminal snapshot"
    hub.dispatch([completed("9-3", job_id="job-3")])
    assert late.ids == ["9-3"], "other jobs go on"


def test_cursors_are_per_job(hub: Hub) -> None:
    client = Client(hub, "a1", ALICE)
    client.subscribe("job-1", "10-0")
    client.subscribe("job-2", "3-0")
    hub.dispatch([progress("5-0", job_id="job-2"), progress("5-1", job_id="job-1")])
    assert client.ids == ["5-0"]


def test_live_events_wait_while_the_snapshot_is_read(hub: Hub) -> None:
    client = Client(hub, "a1", ALICE)
    hub.watch_job(client.conn, "job-1", 0)
    hub.dispatch([progress("4-0", value=10), progress("5-0", value=20), progress("6-0", value=30)])
    assert client.sent == [], "nothing of the job before its snapshot"

    hub.open_job(client.conn, "job-1", snapshot("job-1", "5-0"))
    assert client.sent[0]["snapshot"] is True
    assert client.ids == ["6-0"], "held events already in the snapshot are dropped"
    hub.dispatch([progress("7-0")])
    assert client.ids == ["6-0", "7-0"]


def test_unsubscribe_stops_progress_but_not_the_owners_outcome(hub: Hub) -> None:
    client = Client(hub, "a1", ALICE)
    client.subscribe("job-1", "1-0")
    hub.unwatch_job(client.conn, "job-1")
    hub.dispatch([progress("2-0"), completed("3-0")])
    assert client.ids == ["3-0"]


def test_removed_connection_gets_nothing_and_leaves_no_trace(hub: Hub) -> None:
    client = Client(hub, "a1", ALICE)
    client.subscribe("job-1", "1-0")
    hub.join_channel(client.conn, "notifications")
    hub.remove(client.conn)
    hub.remove(client.conn)  # idempotent
    hub.dispatch(
        [progress("2-0"), completed("3-0"), stream("4-0", events.system_notification("x"))]
    )
    assert client.ids == []
    assert not hub.connections and not hub.by_user and not hub.by_job and not hub.by_channel


def test_replay_then_held_live_events_without_duplicates(hub: Hub) -> None:
    client = Client(hub, "a1", ALICE, hold=True)
    hub.dispatch([completed("5-0", job_id="job-2"), completed("6-0", job_id="job-3")])
    assert client.sent == [], "live events wait for the replay"

    replay = [completed("4-0", job_id="job-1"), completed("5-0", job_id="job-2")]
    hub.resume(client.conn, replay)
    assert client.ids == ["4-0", "5-0", "6-0"]
    hub.dispatch([completed("7-0", job_id="job-4")])
    assert client.ids == ["4-0", "5-0", "6-0", "7-0"]


def test_delivered_counts_messages_sent(hub: Hub) -> None:
    a = Client(hub, "a1", ALICE)
    Client(hub, "a2", ALICE)
    a.subscribe("job-1", "1-0")
    before = hub.delivered
    hub.dispatch([progress("2-0"), completed("3-0")])
    assert hub.delivered - before == 3  # progress to a1; the outcome to a1 and a2
