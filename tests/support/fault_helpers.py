"""Helpers of the fault-injection and multi-instance tests.

- :class:`ServerProc`: a notifier process (``python -m api`` or ``python -m notifier``) that
  a test owns: started on a port it chooses, ``kill9()`` (SIGKILL to its process group) and
  started again on the same port.
- :class:`FailoverProxy`: a TCP proxy in front of notifier instances whose upstream can be
  switched, as a sticky load balancer fails over when an instance dies.
- :class:`RecordingClient`: the product's :class:`notifier.client.JobcastClient`, recording
  every message as it came off the wire (before the helper's de-duplication).
- :func:`produce` / :func:`start_producer`: ``python -m tests.support.producer`` in a
  subprocess.
- :class:`History`: the history checker: what was produced against what each client got.

Every process is started by the tests and stopped by PID (``stop()`` in ``finally``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from notifier.client import JobcastClient
from notifier.contract.events import TERMINAL_TYPES, parse_event_id
from tests.support.env import REPO, child_env, free_port
from tests.support.keyspace import user_partition
from tests.support.processes import (
    log_tail,
    ready_or_fail,
    running_worker,
    stop_process,
)
from tests.support.waiting import wait_until_async

INBOX_TYPES = ("job_completed", "job_error", "system_notification", "maintenance_notification")


def key(event_id: str) -> tuple[int, int]:
    return parse_event_id(event_id)


# --- notifier processes


class ServerProc:
    """A notifier process on a fixed port: ``start()``, ``kill9()``, ``start()`` again."""

    def __init__(
        self,
        log_dir: Path,
        *,
        module: str = "api",
        env: dict[str, str] | None = None,
        port: int | None = None,
        name: str = "server",
    ) -> None:
        self.module = module
        self.name = name
        self.env = env or child_env()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.native_url = f"ws://127.0.0.1:{self.port}/ws/job-status-native"
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> None:
        """Start (blocking until ``/readyz`` is 200). Call from a thread in async tests."""
        if self.proc is not None and self.proc.poll() is None:
            return
        args = [sys.executable, "-m", self.module, "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pids.append(self.proc.pid)
        proc = self.proc
        ready_or_fail(
            proc,
            f"{self.url}/readyz",
            f"{self.module} on port {self.port}",
            lambda: log_tail(self.log_path),
            self.stop,
            interval=0.1,
        )

    def kill9(self) -> None:
        """SIGKILL the process and its group: no lifespan shutdown, no clean-up in Redis."""
        proc = self.proc
        assert proc is not None and proc.poll() is None, "the server is not running"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, group=True)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_all(*procs: ServerProc) -> None:
    """Start ``procs`` side by side (blocking until each is ready); if one fails, every one
    of them is stopped and the first failure raised."""
    failures: list[BaseException] = []

    def start(proc: ServerProc) -> None:
        try:
            proc.start()
        except BaseException as exc:  # pytest.fail raises an OutcomeException
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in procs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        for proc in procs:
            proc.stop()
        raise failures[0]


@contextlib.contextmanager
def servers(*procs: ServerProc) -> Iterator[tuple[ServerProc, ...]]:
    """Start ``procs`` side by side; stop every one of them by PID when the block ends."""
    try:
        start_all(*procs)
        yield procs
    finally:
        for proc in procs:
            proc.stop()


# --- Celery worker of the tests' fault app


@contextlib.contextmanager
def fault_worker(
    log_path: Path, env: dict[str, str] | None = None, *, concurrency: int = 1
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker of ``tests.support.fault_celery_app`` (its own queue), ready until the block
    ends."""
    from tests.support.fault_celery_app import QUEUE

    args = ["-m", "celery", "-A", "tests.support.fault_celery_app", "worker",
            "-c", str(concurrency), "-P", "prefork", "-Q", QUEUE, "-l", "INFO",
            "--without-mingle", "--without-gossip", "-n", f"fault-{os.getpid()}@%h"]  # fmt: skip
    with running_worker(log_path, env, args=args) as proc:
        yield proc


# --- a switchable TCP proxy (a load balancer failing over)


class FailoverProxy:
    """Forwards every TCP connection to ``127.0.0.1:<upstream>``; ``switch()`` changes the
    upstream for new connections. When the upstream closes, so does the client side."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.blocked = False
        self._cut_next_get = False
        #: How many responses :meth:`cut_next_get_response` cut (0 or 1).
        self.cut_responses = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def switch(self, upstream: int) -> None:
        self.upstream = upstream

    def cut(self) -> None:
        """Drop every open connection: both sides see it close (reset)."""
        for writer in list(self._writers):
            writer.transport.abort()

    def down(self) -> None:
        """A network outage: open connections are reset and new ones too, until ``up()``.
        (A cut alone does not end an Engine.IO polling session: its next request simply
        arrives over a new connection.)"""
        self.blocked = True
        self.cut()

    def up(self) -> None:
        self.blocked = False

    def cut_next_get_response(self) -> None:
        """The next response to a GET (an Engine.IO long-poll) reaches the client with its
        headers and none of its body, then the connection is reset: the network failing
        part way through a response."""
        self._cut_next_get = True

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        methods: list[bytes],
        *,
        requests: bool,
    ) -> None:
        """Copy one direction. ``methods`` holds the methods of the connection's requests
        not yet answered (HTTP/1.1 answers in order); ``requests`` says this direction
        carries them."""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if requests:
                    method = data.split(b" ", 1)[0]
                    if method in (b"GET", b"POST"):
                        methods.append(method)
                elif data.startswith(b"HTTP/1.1 ") and methods:
                    method = methods.pop(0)
                    head, blank, _ = data.partition(b"\r\n\r\n")
                    if self._cut_next_get and method == b"GET" and blank:
                        self._cut_next_get = False
                        self.cut_responses += 1
                        writer.write(head + blank)
                        await writer.drain()
                        writer.transport.abort()
                        break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            except OSError:
                writer.close()
                return
            self._writers.add(up_writer)
            methods: list[bytes] = []
            pipes = [
                asyncio.ensure_future(self._pipe(reader, up_writer, methods, requests=True)),
                asyncio.ensure_future(self._pipe(up_reader, writer, methods, requests=False)),
            ]
            # Either direction ending (the upstream died, the client left) ends both.
            _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            up_writer.close()
            writer.close()
            self._writers.discard(up_writer)
        finally:
            self._writers.discard(writer)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


# --- clients


class RecordingClient(JobcastClient):
    """The product's client helper, recording each message before it de-duplicates."""

    def __init__(self, url: str, token: str, *, user: str, **kwargs: Any) -> None:
        super().__init__(url, token, **kwargs)
        self.user = user
        self.raw: list[dict[str, Any]] = []
        self.welcomes: list[dict[str, Any]] = []

    async def _on_message(self, event: str, data: Any = None) -> None:
        if isinstance(data, dict):
            self.raw.append(data)
            if event == "connection_established":
                self.welcomes.append(data)
        await super()._on_message(event, data)

    def event_ids(self, types: Sequence[str] = INBOX_TYPES) -> list[str]:
        """The eventIds of the non-snapshot messages of ``types``, in arrival order."""
        return [
            m["eventId"]
            for m in self.raw
            if m.get("type") in types and "eventId" in m and not m.get("snapshot")
        ]


async def connect_all(clients: Sequence[RecordingClient], within: float = 20.0) -> None:
    """Connect each client (a few at a time) and wait for every welcome."""
    for start in range(0, len(clients), 5):
        await asyncio.gather(*(c.connect() for c in clients[start : start + 5]))
    ok = await wait_until_async(lambda: all(c.welcomes for c in clients), within, interval=0.05)
    assert ok, "not every client got connection_established"


# --- the producer


def producer_args(mode: str, out: Path, **options: Any) -> list[str]:
    args = [sys.executable, "-m", "tests.support.producer", mode, "--out", str(out)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        args += [flag, str(value)]
    return args


def start_producer(
    mode: str, out: Path, env: dict[str, str] | None = None, **options: Any
) -> subprocess.Popen[bytes]:
    log = out.with_suffix(".log").open("ab")
    try:
        return subprocess.Popen(
            producer_args(mode, out, **options),
            cwd=REPO,
            env=env or child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


async def finish_producer(
    proc: subprocess.Popen[bytes], out: Path, within: float = 60.0
) -> list[dict[str, Any]]:
    """Wait (bounded) for the producer; returns its records (one per event it emitted)."""
    try:
        code = await asyncio.wait_for(asyncio.to_thread(proc.wait), within)
    finally:
        stop_process(proc, group=True)
    assert code == 0, f"producer exited {code}:\n{log_tail(out.with_suffix('.log'))}"
    return read_records(out)


async def produce(
    mode: str, out: Path, env: dict[str, str] | None = None, **options: Any
) -> list[dict[str, Any]]:
    return await finish_producer(start_producer(mode, out, env, **options), out)


def read_records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


# --- the history checker


class History:
    """Everything produced (the producer's records: eventId or None when dropped), and the
    checks of what one client received against it."""

    def __init__(self, produced: Sequence[dict[str, Any]]) -> None:
        self.produced = [r for r in produced if r.get("eventId")]
        #: Per partition, the records by their id there (ids are unique in one partition's
        #: stream; a broadcast has a copy, with its own id, in every partition).
        self.by_partition: defaultdict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
        for r in self.produced:
            copies = r.get("eventIds") or {user_partition(r["userId"]).index: r["eventId"]}
            for partition, event_id in copies.items():
                ids = self.by_partition[int(partition)]
                assert event_id not in ids, f"the producer saw a duplicate eventId {event_id}"
                ids[event_id] = r

    def feed(self, user: str) -> dict[str, dict[str, Any]]:
        """The records of the user's partition, by their id there."""
        return self.by_partition[user_partition(user).index]

    def inbox(self, user: str) -> list[str]:
        """What the replay covers for ``user``, in stream order: the terminal events of
        their jobs and the broadcasts."""
        ids = [
            event_id
            for event_id, r in self.feed(user).items()
            if (r["type"] in TERMINAL_TYPES and r["userId"] == user) or r["route"] == "all"
        ]
        return sorted(ids, key=key)

    def jobs(self, user: str) -> list[str]:
        return sorted({r["jobId"] for r in self.produced if r["userId"] == user and r["jobId"]})

    def check(self, user: str, raw: Sequence[dict[str, Any]], *, label: str = "") -> None:
        """Every inbox event of ``user`` exactly once and in order; no foreign event; per
        job: increasing eventIds and sequence numbers, nothing after the terminal event, and
        the job's last word (live or snapshot) is its terminal event."""
        who = f"{label or user}"
        stream = [m for m in raw if "eventId" in m and not m.get("snapshot")]
        ids = [m["eventId"] for m in stream]
        dupes = sorted({i for i in ids if ids.count(i) > 1}, key=key)
        assert not dupes, f"{who}: duplicates shown: {dupes[:10]}"
        by_id = self.feed(user)
        for msg in stream:
            record = by_id.get(msg["eventId"])
            assert record is not None, f"{who}: an event nobody produced: {msg}"
            assert record["route"] == "all" or record["userId"] == user, (
                f"{who}: a foreign event: {msg}"
            )
            assert record["type"] == msg["type"] and record.get("jobId", "") == msg.get(
                "jobId", ""
            ), f"{who}: {msg} does not match what was produced: {record}"

        expected = self.inbox(user)
        got = [i for i in ids if by_id[i]["type"] in INBOX_TYPES]
        missing = sorted(set(expected) - set(got), key=key)
        if missing:
            only_snapshot = [
                f"{eid} shown only as the snapshot answering a subscribe_job (message #{n}; "
                f"the next connection_established is #{_next_welcome(raw, n)})"
                for eid in missing
                for n, m in enumerate(raw)
                if m.get("snapshot") and m.get("eventId") == eid
            ]
            raise AssertionError(
                f"{who}: {len(missing)} of {len(expected)} inbox events never delivered as "
                f"events: {missing[:10]}"
                + ("; " + "; ".join(only_snapshot[:5]) if only_snapshot else "")
            )
        assert got == expected, f"{who}: inbox events out of order"

        by_job: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        for msg in raw:
            if msg.get("jobId") and msg.get("type") in ("job_status_update", *TERMINAL_TYPES):
                by_job[msg["jobId"]].append(msg)
        for job_id in self.jobs(user):
            messages = by_job.get(job_id, [])
            live = [m for m in messages if not m.get("snapshot")]
            keys = [key(m["eventId"]) for m in live]
            assert keys == sorted(keys) and len(set(keys)) == len(keys), (
                f"{who}: job {job_id} events out of order: {[m['eventId'] for m in live]}"
            )
            seqs = [by_id[m["eventId"]]["seq"] for m in live]
            assert seqs == sorted(seqs), f"{who}: job {job_id} sequence went back: {seqs}"
            ends = [i for i, m in enumerate(messages) if m["type"] in TERMINAL_TYPES]
            assert ends, f"{who}: job {job_id} never showed its end"
            after_end = [m for m in messages[ends[0] + 1 :] if m["type"] not in TERMINAL_TYPES]
            assert not after_end, f"{who}: job {job_id} showed {after_end[0]} after its end"
            progress = [
                m["data"]["progress"]
                for m in messages
                if m["type"] == "job_status_update" and "progress" in m.get("data", {})
            ]
            assert progress == sorted(progress), f"{who}: job {job_id} progress went back"


def _next_welcome(raw: Sequence[dict[str, Any]], index: int) -> int | None:
    for n in range(index + 1, len(raw)):
        if raw[n].get("type") == "connection_established":
            return n
    return None


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text → {(sample name, sorted labels): value}, with prometheus-client's
    own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples
