"""An asyncio client for Python services that follow jobs (the ``jobcast watch`` CLI uses it).

    async with JobcastClient("http://127.0.0.1:8080", token) as client:
        async for message in client.watch(job_id):
            print(message["type"], message.get("data"))

It does what the contract asks of client helpers: it sends the routing hint ``uid`` (the
token's ``sub``) on every request, so a load balancer hashing it keeps the user on one
notifier; it reconnects with ``lastEventId`` (so
the server replays what was missed), drops duplicates by ``eventId``, subscribes again to
its jobs after a reconnect (whose snapshot sums up missed progress), and acknowledges
terminal events so they are not delivered again.

It also assembles each job's live output (``job_output`` chunks, placed by offset after the
snapshot's ``data.output``): :meth:`JobcastClient.output` is the text so far. A chunk that
overlaps what it has adds only its new part; one past a gap (the text between was missed,
e.g. on a connection that did not subscribe) is left out, and a subscribed job is
subscribed again, whose snapshot brings the whole output.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any

from notifier.contract.endpoints import SOCKETIO_PATH, routing_hint, with_routing_hint
from notifier.contract.events import JOB_OUTPUT, is_terminal, parse_event_id
from notifier.transport.client_session import close_client, socketio_client

_SEEN_LIMIT = 10_000


class JobcastClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        transports: Sequence[str] = ("polling", "websocket"),
        last_event_id: str | None = None,
        ack: bool = True,
        uid: str | None = None,
    ) -> None:
        self.url = url
        self.token = token
        #: The routing hint sent as ``uid`` on every request (SPEC section 10): the token's
        #: ``sub`` unless given, so a load balancer keeps the user on one notifier.
        self.uid = uid if uid is not None else routing_hint(token)
        self.last_event_id = last_event_id
        self.recovered: bool | None = None
        self._transports = list(transports)
        self._ack = ack
        self._jobs: set[str] = set()
        self._outputs: dict[str, str] = {}
        self._refetching: set[str] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._ended: OrderedDict[str, None] = OrderedDict()  # jobs whose end was delivered
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._sio = socketio_client(reconnection=True, reconnection_delay_max=5)
        self._sio.on("*", self._on_message)
        self._sio.on("connect", self._on_connect)

    async def __aenter__(self) -> JobcastClient:
        await self.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _auth(self) -> dict[str, str]:
        auth = {"token": self.token}
        if self.last_event_id:
            auth["lastEventId"] = self.last_event_id
        return auth

    async def connect(self) -> None:
        await self._sio.connect(
            with_routing_hint(self.url, self.uid),
            socketio_path=SOCKETIO_PATH,
            auth=self._auth,
            transports=self._transports,
        )

    async def close(self) -> None:
        """Disconnect (without waiting out a pending long-poll) and close the HTTP session;
        never raises, and each of its waits lasts 10 s at most."""
        await close_client(self._sio, 10.0)

    @property
    def transport(self) -> str:
        return str(self._sio.transport())

    async def _on_connect(self) -> None:
        for job_id in sorted(self._jobs):  # after a reconnect: the snapshot sums up the gap
            await self._sio.emit("subscribe_job", {"jobId": job_id})

    async def _on_message(self, event: str, data: Any = None) -> None:
        if not isinstance(data, dict):
            return
        if event == "connection_established":
            self.recovered = bool(data.get("recovered"))
        job_id = data.get("jobId")
        if isinstance(job_id, str):  # before de-duplication: a snapshot may repeat an id
            await self._assemble(job_id, data)
        event_id = data.get("eventId")
        if isinstance(event_id, str):
            if event_id in self._seen:
                return
            self._seen[event_id] = None
            if len(self._seen) > _SEEN_LIMIT:
                self._seen.popitem(last=False)
            if not data.get("snapshot") and (
                self.last_event_id is None
                or parse_event_id(event_id) > parse_event_id(self.last_event_id)
            ):
                self.last_event_id = event_id
            terminal = is_terminal(data)
            if self._ack and terminal:
                await self._sio.emit("ack", {"eventId": event_id})
            if terminal and isinstance(job_id, str) and not data.get("snapshot"):
                # A job ends once: a second end under another id (published again by a
                # worker after a Redis failover lost the first copy) is acknowledged, and
                # dropped.
                if job_id in self._ended:
                    return
                self._ended[job_id] = None
                if len(self._ended) > _SEEN_LIMIT:
                    self._ended.popitem(last=False)
        await self._queue.put(data)

    def output(self, job_id: str) -> str:
        """The job's live output received so far (from the start, without gaps)."""
        return self._outputs.get(job_id, "")

    async def _assemble(self, job_id: str, message: dict[str, Any]) -> None:
        data = message.get("data")
        if not isinstance(data, dict):
            return
        if message.get("snapshot"):
            self._refetching.discard(job_id)
            output = data.get("output")
            if isinstance(output, str) and len(output) >= len(self.output(job_id)):
                self._outputs[job_id] = output
            return
        if message.get("type") != JOB_OUTPUT:
            return
        offset, text = data.get("offset"), data.get("text")
        if not isinstance(offset, int) or not isinstance(text, str):
            return
        known = self.output(job_id)
        if offset > len(known):  # a gap: the snapshot of a new subscription fills it
            if job_id in self._jobs and job_id not in self._refetching:
                self._refetching.add(job_id)
                await self._sio.emit("subscribe_job", {"jobId": job_id})
            return
        if offset + len(text) > len(known):
            self._outputs[job_id] = known + text[len(known) - offset :]

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Every message from the server, once each, in arrival order."""
        while True:
            yield await self._queue.get()

    async def subscribe(self, job_id: str) -> dict[str, Any]:
        """Subscribe to a job; returns the server's answer (``subscribed`` or ``error``)."""
        self._jobs.add(job_id)
        answer = await self._sio.call("subscribe_job", {"jobId": job_id}, timeout=10)
        if not isinstance(answer, dict) or answer.get("type") == "error":
            self._jobs.discard(job_id)
        return answer if isinstance(answer, dict) else {"type": "error", "code": "no_answer"}

    async def watch(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """The job's messages (the snapshot first) until its terminal one, inclusive."""
        answer = await self.subscribe(job_id)
        if answer.get("type") == "error":
            raise LookupError(f"{answer.get('code')}: {answer.get('message')}")
        async for message in self.messages():
            if message.get("jobId") != job_id:
                continue
            yield message
            if is_terminal(message):
                self._jobs.discard(job_id)
                return
