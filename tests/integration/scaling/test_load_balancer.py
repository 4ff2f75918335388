"""N notifiers behind a real load balancer (issue 15): HAProxy and nginx with the
configurations of ``api/loadbalancer.py`` (what ``deploy/`` ships), real ``python -m api``
processes, real Socket.IO clients over long-polling and WebSocket, the session's Redis.

- Affinity: every request of a user (each long-poll, the WebSocket) reaches one notifier,
  all the users of a partition share one (the load balancer computes the partition from
  the hint as jobcast does), and each notifier reads only its users' partitions.
- Redis egress per event delivered, against one notifier: round-robin routing (the
  comparison) costs about 3x once users share partitions; routing by the hint's
  partition about 1x (at most 1.2x).
- A notifier killed mid-stream: only its users reconnect, and they recover everything.
- A notifier joining (the load balancer reloaded): about a quarter of the users move,
  polling ones through Engine.IO's "session not found"; nothing is lost.
- The hint is only a hint (a wrong one is served correctly), and a forged
  ``X-Forwarded-For`` buys nothing: failures are limited by the real client's address.

Every figure asserted is a count or a byte ratio, never a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import websockets

from notifier.contract.events import TERMINAL_TYPES
from tests.support.fault_helpers import (
    History,
    RecordingClient,
    ServerProc,
    connect_all,
    finish_producer,
    produce,
    start_producer,
)
from tests.support.keyspace import user_partition
from tests.support.loadbalancer import LoadBalancer, Notifiers, log_records, metrics
from tests.support.processes import stop_process
from tests.support.waiting import wait_until, wait_until_async

pytestmark = pytest.mark.integration

USERS = 60
STEPS = 10  # started + 10 progress + completed per job: 12 rounds
SECONDS = 3.6  # 60 jobs x 12 events in 3.6 s: 200 events/s
NOTIFIERS = 3


# --- fixtures


@pytest.fixture(scope="module")
def notifiers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notifiers]:
    """Three notifiers for the module's tests (a test may kill one or add a fourth: the
    ``cluster`` fixture puts them back)."""
    group = Notifiers(tmp_path_factory.mktemp("notifiers"))
    try:
        group.start(NOTIFIERS)
        yield group
    finally:
        group.stop()


@pytest.fixture
def cluster(notifiers: Notifiers) -> Iterator[Notifiers]:
    """The three notifiers, all running (one killed by an earlier test is started again);
    any added by the test is stopped afterwards."""
    for proc in notifiers.procs[:NOTIFIERS]:
        if proc.proc is None or proc.proc.poll() is not None:
            proc.start()
    try:
        yield notifiers
    finally:
        for proc in notifiers.procs[NOTIFIERS:]:
            proc.stop()
        del notifiers.procs[NOTIFIERS:]


@contextlib.asynccontextmanager
async def balancer(
    kind: str, workdir: Path, procs: Sequence[ServerProc], balance: str = "uid"
) -> AsyncIterator[LoadBalancer]:
    lb = LoadBalancer(kind, workdir)
    try:
        await asyncio.to_thread(lb.start, lb.topology(procs, balance=balance))
        yield lb
    finally:
        await asyncio.to_thread(lb.stop)


# --- helpers


def users(prefix: str, count: int = USERS) -> list[str]:
    return [f"{prefix}-u{i:02d}" for i in range(count)]


def job_of(prefix: str, user: str) -> str:
    return f"{prefix}-{user}-0"


def clients_for(
    url: str, tokens: Any, names: Sequence[str], *, polling: bool = True, **kwargs: Any
) -> list[RecordingClient]:
    """One client per user: half long-polling only, half WebSocket (all WebSocket when
    ``polling`` is false)."""
    return [
        RecordingClient(
            url,
            tokens.make(user),
            user=user,
            transports=["polling"] if polling and n % 2 else ["websocket"],
            **kwargs,
        )
        for n, user in enumerate(names)
    ]


async def subscribe_all(clients: Sequence[RecordingClient], prefix: str) -> None:
    for client in clients:
        answer = await client.subscribe(job_of(prefix, client.user))
        assert answer.get("type") == "subscribed", (client.user, answer)


def finished(clients: Sequence[RecordingClient]) -> bool:
    return all(any(m.get("type") in TERMINAL_TYPES for m in c.raw) for c in clients)


def live_ends(client: RecordingClient) -> list[dict[str, Any]]:
    """The job's terminal event as delivered live (not as a subscription's snapshot)."""
    return [m for m in client.raw if m.get("type") in TERMINAL_TYPES and not m.get("snapshot")]


def egress(redis_client: Any) -> int:
    """Bytes Redis has sent to its clients (summed over the nodes of a cluster)."""
    stats = redis_client.info("stats")
    if "total_net_output_bytes" in stats:
        return int(stats["total_net_output_bytes"])
    return sum(int(node["total_net_output_bytes"]) for node in stats.values())


async def stream(
    tmp_path: Path,
    prefix: str,
    names: Sequence[str],
    clients: Sequence[RecordingClient],
    *,
    seconds: float = SECONDS,
    midway: Callable[[], object] | None = None,
    until: Callable[[], bool] = lambda: True,
) -> History:
    """One job per user (about 200 events/s by default); ``midway`` (blocking) runs once
    every client has had some of the stream live. Returns the history once every client
    has its job's end and ``until`` holds (and a bounded chance for late duplicates has
    passed)."""
    out = tmp_path / f"{prefix}.jsonl"
    producer = start_producer(
        "run", out, users=names, jobs=1, prefix=prefix, steps=STEPS, seconds=seconds
    )
    try:
        if midway is not None:
            live = await wait_until_async(
                lambda: all(c.last_event_id for c in clients), 20, interval=0.05
            )
            assert live, "the stream never got going"
            await asyncio.to_thread(midway)
        produced = await finish_producer(producer, out)
    finally:
        stop_process(producer, group=True)
    assert all(r["eventId"] for r in produced), "the bus dropped an event"
    done = await wait_until_async(lambda: finished(clients) and until(), 40, interval=0.05)
    assert done, [c.user for c in clients if not live_ends(c)]
    await asyncio.sleep(1.0)
    return History([*read_queued(tmp_path, prefix), *produced])


def read_queued(tmp_path: Path, prefix: str) -> list[dict[str, Any]]:
    path = tmp_path / f"{prefix}-queued.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def prepare(
    tmp_path: Path, prefix: str, names: Sequence[str], clients: Sequence[RecordingClient]
) -> None:
    """Queue each user's job, connect the clients, subscribe each to its job."""
    await produce("queued", tmp_path / f"{prefix}-queued.jsonl", users=names, prefix=prefix)
    await connect_all(clients, within=30)
    await subscribe_all(clients, prefix)


def check_all(history: History, clients: Sequence[RecordingClient]) -> None:
    for client in clients:
        history.check(client.user, client.raw)


class Placement:
    """Where each user's connections landed: the notifiers' "connected" log lines written
    after :meth:`mark`."""

    def __init__(self, procs: Sequence[ServerProc]) -> None:
        self.procs = list(procs)
        self.skip = {p.name: len(log_records(p, "connected")) for p in self.procs}

    def records(self) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for proc in self.procs:
            seen = log_records(proc, "connected")[self.skip.get(proc.name, 0) :]
            found += [(proc.name, r) for r in seen]
        return found

    def by_user(self) -> dict[str, list[str]]:
        """Each user's notifiers, one entry per connection, in time order."""
        ordered = sorted(self.records(), key=lambda item: str(item[1]["ts"]))
        where: defaultdict[str, list[str]] = defaultdict(list)
        for name, record in ordered:
            where[str(record["user"])].append(name)
        return dict(where)


def gauge(samples: dict[Any, float], name: str) -> float:
    return sum(v for (sample, _), v in samples.items() if sample == name)


def counter(samples: dict[Any, float], name: str, **labels: str) -> float:
    want = tuple(sorted(labels.items()))
    return sum(v for (sample, have), v in samples.items() if sample == name and have == want)


async def close_all(clients: Sequence[RecordingClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients))


async def readers_idle(procs: Sequence[ServerProc]) -> None:
    """Every notifier has let go of the partitions of the clients just closed (so the next
    measurement counts only its own readers)."""

    def idle() -> bool:
        return all(
            gauge(metrics(p), "jobcast_reader_partitions") == 0
            and gauge(metrics(p), "jobcast_connections") == 0
            for p in procs
        )

    ok = await asyncio.to_thread(wait_until, idle, 20, interval=0.2)
    assert ok, {p.name: gauge(metrics(p), "jobcast_reader_partitions") for p in procs}


async def measured(
    tmp_path: Path,
    redis_client: Any,
    prefix: str,
    names: Sequence[str],
    clients: Sequence[RecordingClient],
) -> tuple[History, float]:
    """The workload; returns its history and Redis's output bytes per event delivered."""
    await prepare(tmp_path, prefix, names, clients)
    before = egress(redis_client)
    history = await stream(tmp_path, prefix, names, clients)
    sent = egress(redis_client) - before
    check_all(history, clients)
    delivered = sum(len(c.event_ids(("job_status_update", *TERMINAL_TYPES))) for c in clients)
    return history, sent / delivered


# --- a: affinity and Redis egress


@pytest.mark.parametrize("kind", ["haproxy", "nginx"])
async def test_affinity(
    kind: str, tmp_path: Path, cluster: Notifiers, redis_client: Any, tokens: Any
) -> None:
    """60 users, half polling, half WebSocket, behind the load balancer: each user's every
    connection on one notifier, each notifier reading only its users' partitions."""
    procs = cluster.procs[:NOTIFIERS]
    names = users(f"a{kind[0]}")
    partitions = {u: user_partition(u).index for u in names}
    async with balancer(kind, tmp_path, procs) as lb:
        placement = Placement(procs)
        clients = clients_for(lb.url, tokens, names)
        try:
            await prepare(tmp_path, "a", names, clients)
            samples = {p.name: await asyncio.to_thread(metrics, p) for p in procs}
            history = await stream(tmp_path, "a", names, clients)
            check_all(history, clients)
            where = placement.by_user()
        finally:
            await close_all(clients)
    await readers_idle(procs)

    # Every connection of a user (a polling session's every request) on one notifier.
    assert sorted(where) == sorted(names), set(names) ^ set(where)
    split = {u: sorted(set(w)) for u, w in where.items() if len(set(w)) > 1}
    assert not split, f"users spread over notifiers: {split}"
    assert all(len(w) == 1 for w in where.values()), "a client reconnected"
    home = {u: w[0] for u, w in where.items()}
    share = Counter(home.values())
    assert len(share) == NOTIFIERS, f"a notifier got nobody: {share}"
    # The load balancer computed each user's partition as jobcast does: all the users of
    # a partition are on one notifier.
    holders: defaultdict[int, set[str]] = defaultdict(set)
    for user, name in home.items():
        holders[partitions[user]].add(name)
    shared = {p: sorted(n) for p, n in holders.items() if len(n) > 1}
    assert not shared, f"partitions whose users are on several notifiers: {shared}"
    read = {}
    for proc in procs:
        connections = gauge(samples[proc.name], "jobcast_connections")
        assert connections == share[proc.name], (proc.name, connections, share)
        theirs = {partitions[u] for u, name in home.items() if name == proc.name}
        read[proc.name] = gauge(samples[proc.name], "jobcast_reader_partitions")
        assert read[proc.name] <= len(theirs), (proc.name, read, sorted(theirs))
        assert read[proc.name] < 64 * 3 / 4, (proc.name, read)
    print(
        f"\n{kind}: users per notifier {dict(share)}, partitions read {read} "
        f"(the users': {len(set(partitions.values()))})"
    )


def sharing_users(prefix: str, partitions: int = 8) -> list[str]:
    """60 users of ``partitions`` partitions, 7 or 8 of them in each: what every deployment
    with more users than partitions looks like."""
    pool = (f"{prefix}-u{i:04d}" for i in range(100_000))
    per: defaultdict[int, list[str]] = defaultdict(list)
    for user in pool:
        index = user_partition(user).index
        if index < partitions and len(per[index]) < -(-USERS // partitions):
            per[index].append(user)
            if sum(map(len, per.values())) == USERS:
                break
    return sorted(u for group in per.values() for u in group)


@pytest.mark.parametrize("kind", ["haproxy", "nginx"])
async def test_redis_egress(
    kind: str, tmp_path: Path, cluster: Notifiers, redis_client: Any, tokens: Any
) -> None:
    """Redis's output bytes per event delivered: behind the hashing load balancer about
    what one notifier costs; behind round-robin each notifier reads every partition."""
    procs = cluster.procs[:NOTIFIERS]
    names = sharing_users(f"e{kind[0]}")
    figures: dict[str, float] = {}

    # One notifier: every client straight to notifier-1 (the baseline).
    clients = clients_for(procs[0].url, tokens, names)
    try:
        _, figures["one"] = await measured(tmp_path, redis_client, "one", names, clients)
    finally:
        await close_all(clients)
    await readers_idle(procs)

    for balance in ("uid", "roundrobin"):  # round-robin cannot keep polling sessions
        async with balancer(kind, tmp_path / balance, procs, balance=balance) as lb:
            clients = clients_for(lb.url, tokens, names, polling=balance == "uid")
            try:
                _, figures[balance] = await measured(
                    tmp_path, redis_client, balance, names, clients
                )
            finally:
                await close_all(clients)
        await readers_idle(procs)

    ratios = {k: round(v / figures["one"], 2) for k, v in figures.items()}
    print(f"\n{kind}: Redis bytes per event {figures}, against one notifier {ratios}")
    assert figures["roundrobin"] >= 2 * figures["one"], figures
    assert figures["uid"] <= 1.2 * figures["one"], figures


# --- b: a notifier killed mid-stream


async def test_notifier_killed_midstream(
    tmp_path: Path, cluster: Notifiers, redis_client: Any, tokens: Any
) -> None:
    procs = cluster.procs[:NOTIFIERS]
    names = users("b", 30)
    async with balancer("haproxy", tmp_path, procs) as lb:
        placement = Placement(procs)
        clients = clients_for(lb.url, tokens, names)
        try:
            await prepare(tmp_path, "b", names, clients)
            home = {u: w[0] for u, w in placement.by_user().items()}
            victim = Counter(home.values()).most_common(1)[0][0]
            moved = {u for u, name in home.items() if name == victim}

            def kill() -> None:
                next(p for p in procs if p.name == victim).kill9()

            history = await stream(
                tmp_path,
                "b",
                names,
                clients,
                seconds=6,
                midway=kill,
                until=lambda: all(len(c.welcomes) >= 2 for c in clients if c.user in moved),
            )
            where = placement.by_user()
            for client in clients:
                if client.user in moved:
                    assert all(w["recovered"] is True for w in client.welcomes[1:]), (
                        client.user,
                        client.welcomes,
                    )
                    assert victim not in where[client.user][1:], where[client.user]
                else:  # the others' connections stayed
                    assert len(client.welcomes) == 1, (client.user, home[client.user])
                    assert where[client.user] == [home[client.user]]
                history.check(client.user, client.raw)
                assert len(live_ends(client)) == 1, (client.user, client.raw[-3:])
            print(f"\nkilled {victim}: {len(moved)} of {len(names)} users reconnected")
        finally:
            await close_all(clients)


# --- c: a fourth notifier joins


async def test_notifier_joins(
    tmp_path: Path, cluster: Notifiers, redis_client: Any, tokens: Any
) -> None:
    procs = cluster.procs[:NOTIFIERS]
    names = users("c")
    (fourth,) = await asyncio.to_thread(cluster.start, 1)
    async with balancer("haproxy", tmp_path, procs) as lb:
        placement = Placement([*procs, fourth])
        clients = clients_for(lb.url, tokens, names)
        try:
            await prepare(tmp_path, "c", names, clients)
            home = {u: w[0] for u, w in placement.by_user().items()}
            assert fourth.name not in home.values()

            def settled() -> bool:  # the old HAProxy is gone, and with it its tunnels
                return all(p.poll() is not None for p in lb.procs[:-1])

            history = await stream(
                tmp_path,
                "c",
                names,
                clients,
                seconds=8,
                midway=lambda: lb.reload(lb.topology([*procs, fourth])),
                until=settled,
            )
            where = placement.by_user()
            moved = {u for u, w in where.items() if w[-1] == fourth.name}
            print(f"\njoined: {len(moved)} of {len(names)} users moved to {fourth.name}")
            assert 5 <= len(moved) <= 30, where
            for client in clients:
                seen = where[client.user]
                if client.user in moved:
                    assert len(client.welcomes) >= 2
                    assert set(seen) == {home[client.user], fourth.name}, seen
                else:  # nobody moved between the old three
                    assert set(seen) == {home[client.user]}, seen
                assert all(w["recovered"] is True for w in client.welcomes[1:]), client.welcomes
                history.check(client.user, client.raw)
                assert len(live_ends(client)) == 1, (client.user, client.raw[-3:])
            polling_moved = [c for c in clients if c.user in moved and c.transport == "polling"]
            assert polling_moved, "no polling client moved"
            # Their session lived on the old notifier: the new one answered Engine.IO's
            # "session not found" (400; python-engineio logs the first one as an error, the
            # others at INFO), they connected again, there, and missed nothing (above).
            invalid = fourth.log_text().count("Invalid session")
            assert invalid >= 1, "notifier-4 never refused an unknown polling session"
            print(f"polling clients moved: {len(polling_moved)}")
        finally:
            await close_all(clients)


# --- d: the hint is only a hint; forwarded addresses only from a trusted proxy


async def test_wrong_hint_is_served_correctly(
    tmp_path: Path, cluster: Notifiers, redis_client: Any, tokens: Any
) -> None:
    procs = cluster.procs[:NOTIFIERS]
    names = ["d-alice", "d-bob"]
    async with balancer("haproxy", tmp_path, procs) as lb:
        placement = Placement(procs)
        before = {p.name: await asyncio.to_thread(metrics, p) for p in procs}
        alice, bob = clients_for(lb.url, tokens, names, polling=False)
        alice.uid = "d-bob"  # the hint names someone else: the token decides
        clients = [alice, bob]
        try:
            await prepare(tmp_path, "d", names, clients)
            history = await stream(tmp_path, "d", names, clients)
            check_all(history, clients)  # each its own job's events, no foreign one
            assert {m.get("jobId") for m in alice.raw if m.get("jobId")} == {job_of("d", "d-alice")}
            served = placement.by_user()["d-alice"]
            assert len(served) == 1, served
            after = await asyncio.to_thread(metrics, next(p for p in procs if p.name == served[0]))
            hint = "jobcast_routing_hints_total"
            grew = counter(after, hint, hint="mismatch") - counter(
                before[served[0]], hint, hint="mismatch"
            )
            assert grew == 1, grew
        finally:
            await close_all(clients)


async def native_attempt(
    url: str, token: str, source: str, forwarded: str | None = None
) -> tuple[str, int | None]:
    """One native connection from ``source`` (a loopback address): ``("welcome", None)`` or
    ``("closed", close code)`` with the close reason's code first."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else None
    async with websockets.connect(
        f"{url}?token={token}", additional_headers=headers, local_addr=(source, 0), open_timeout=10
    ) as ws:
        try:
            raw = await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as closed:
            reason = closed.rcvd.reason if closed.rcvd else ""
            return reason.split(":")[0], closed.rcvd.code if closed.rcvd else None
        message = json.loads(raw)
        assert message.get("type") == "connection_established", message
        return "welcome", None


async def test_forged_forwarded_for_is_limited_by_the_real_address(
    tmp_path: Path, tokens: Any
) -> None:
    limited = Notifiers(
        tmp_path,
        JOBCAST_AUTH_FAILURE_BURST="3",
        # a refill far slower than the test: the limit holds however slow the machine
        JOBCAST_AUTH_FAILURE_RATE_PER_SECOND="0.001",
    )
    try:
        (proc,) = await asyncio.to_thread(limited.start, 1)
        good = tokens.make("d-carol")
        bad = tokens.bad_signature("d-carol")

        # Straight to the notifier from 127.0.0.7, which it does not trust as a proxy: a
        # different forged X-Forwarded-For on each attempt buys nothing.
        for n in range(3):
            got = await native_attempt(proc.native_url, bad, "127.0.0.7", f"203.0.113.{n + 9}")
            assert got == ("invalid_token", 4401), got
        got = await native_attempt(proc.native_url, good, "127.0.0.7", "203.0.113.20")
        assert got == ("rate_limited", 4429), got
        # Another address with the same forged header is not the one limited.
        got = await native_attempt(proc.native_url, good, "127.0.0.8", "203.0.113.9")
        assert got == ("welcome", None), got

        # Through HAProxy (127.0.0.1, trusted): the notifier limits the client behind it.
        async with balancer("haproxy", tmp_path, [proc]) as lb:
            refusals = len(log_records(proc, "connection refused"))
            for n in range(3):
                got = await native_attempt(lb.native_url, bad, "127.0.0.9", f"198.51.100.{n}")
                assert got == ("invalid_token", 4401), got
            got = await native_attempt(lb.native_url, good, "127.0.0.9")
            assert got == ("rate_limited", 4429), got
            got = await native_attempt(lb.native_url, good, "127.0.0.10", "198.51.100.1")
            assert got == ("welcome", None), got
            seen = [r["client"] for r in log_records(proc, "connection refused")[refusals:]]
            assert seen == ["127.0.0.9"] * 4, seen
    finally:
        limited.stop()
