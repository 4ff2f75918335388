"""Client-to-server messages: validation and answers, the same for every transport."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from notifier.contract.events import CHANNELS, StreamEvent, now_ms, parse_event_id
from notifier.contract.settings import Settings
from notifier.core import store
from notifier.core.bus import AsyncRedis
from notifier.core.hub import Connection, Hub
from notifier.core.outbox import CLOSE_POLICY, CLOSE_TOO_BIG
from notifier.core.presence import Presence
from notifier.core.recovery import remember_channel_event
from notifier.core.sessions import Sessions
from notifier.edge.auth import AuthError, Principal, TokenVerifier
from notifier.edge.limits import Verdict
from notifier.observability import metrics

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 200


class ClientError(Exception):
    """A bad client message; answered with an ``error`` message, the connection stays open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_message(code: str, message: str, request: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request and _encodable(request):
        msg["request"] = request[:64]
    return msg


def welcome(principal: Principal, *, recovered: bool = False) -> dict[str, Any]:
    return {
        "type": "connection_established",
        "userId": principal.sub,
        "username": principal.username,
        "timestamp": now_ms(),
        "message": "WebSocket connection established successfully",
        "recovered": recovered,
    }


def decode_text(text: str | bytes) -> Any:
    """A native frame as a JSON value; ``bad_request`` when it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ClientError("bad_request", "message is not valid JSON") from exc


def _text_field(msg: dict[str, Any], name: str, max_length: int = MAX_ID_LENGTH) -> str:
    value = msg.get(name)
    if value is None or value == "":
        raise ClientError("bad_request", f"{name} is required")
    if not isinstance(value, str) or len(value) > max_length or not _encodable(value):
        raise ClientError(
            "bad_request", f"{name} must be a string of at most {max_length} characters"
        )
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:  # lone surrogates from JSON escapes
        return False
    return True


Handler = Callable[[Connection, dict[str, Any]], Awaitable[dict[str, Any] | None]]


class Commands:
    def __init__(
        self,
        hub: Hub,
        client: AsyncRedis,
        settings: Settings,
        presence: Presence,
        verifier: TokenVerifier,
        sessions: Sessions,
        partition_started: Callable[[int], Awaitable[None]],
    ) -> None:
        self.hub = hub
        #: Waits until a partition the hub just asked for is read (from a known id).
        self.partition_started = partition_started
        self.redis = client
        self.settings = settings
        self.presence = presence
        self.verifier = verifier
        self.sessions = sessions
        self._handlers: dict[str, Handler] = {
            "subscribe_job": self.subscribe_job,
            "unsubscribe_job": self.unsubscribe_job,
            "subscribe_channel": self.subscribe_channel,
            "unsubscribe_channel": self.unsubscribe_channel,
            "ping": self.ping,
            "ack": self.ack,
            "refresh_token": self.refresh_token,
        }
        self._background: set[asyncio.Task[None]] = set()
        hub.on_channel = self.channel_dispatched

    def channel_dispatched(self, event: StreamEvent, users: set[str]) -> None:
        """Record, in the background, who held the channel of a channel message (or ``ops``,
        for a ``job_error``) just dispatched: only they are replayed it (``recovery.py``)."""
        if not users:
            return
        task = asyncio.get_running_loop().create_task(self._remember(event, users))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _remember(self, event: StreamEvent, users: set[str]) -> None:
        try:
            await remember_channel_event(
                self.redis,
                self.hub.space,
                event,
                users,
                retention_seconds=self.settings.retention_seconds,
                cap=self.settings.inbox_max_events,
            )
        except Exception as exc:
            log.warning(
                "channel subscribers not recorded; no replay of this message",
                extra={"event_id": event.event_id, "error": str(exc)},
            )

    async def handle(self, conn: Connection, msg: Any) -> dict[str, Any] | None:
        """Handle one client message. Every answer is sent to the connection; the first one
        is also returned (Socket.IO passes it to the client's ack callback)."""
        request = msg.get("type") if isinstance(msg, dict) else None
        if conn.limiter is not None:
            verdict = conn.limiter.check()
            if verdict is not Verdict.OK:
                answer = await self.reject(
                    conn, "rate_limited", "Too many messages: slow down", request
                )
                if verdict is Verdict.CLOSE:
                    conn.close(CLOSE_POLICY, "rate_limited")
                return answer
        try:
            if not isinstance(msg, dict):
                raise ClientError("bad_request", "message must be a JSON object")
            if not isinstance(request, str) or request not in self._handlers:
                raise ClientError("bad_request", f"unknown message type: {str(request)[:64]!r}")
            return await self._handlers[request](conn, msg)
        except ClientError as exc:
            return await self.reject(conn, exc.code, exc.message, request)
        except Exception:
            log.exception("client message failed", extra={"conn": conn.id, "request": request})
            return await self.reject(conn, "internal_error", "the server could not answer", request)

    async def too_large(self, conn: Connection, request: object = None) -> dict[str, Any]:
        """Answer ``message_too_large`` and close the connection (native: 1009)."""
        limit = self.settings.max_message_bytes
        answer = await self.reject(
            conn, "message_too_large", f"messages are limited to {limit} bytes", request
        )
        conn.close(CLOSE_TOO_BIG, "message_too_large")
        return answer

    async def reject(
        self, conn: Connection, code: str, message: str, request: object = None
    ) -> dict[str, Any]:
        metrics.CLIENT_ERRORS.labels(code).inc()
        answer = error_message(code, message, request if isinstance(request, str) else None)
        log.info("client error", extra={"conn": conn.id, "code": code, "request": request})
        conn.send(answer)
        return answer

    def _answer(self, conn: Connection, answer: dict[str, Any]) -> dict[str, Any]:
        conn.send(answer)
        return answer

    async def subscribe_job(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        job_id = _text_field(msg, "jobId")
        if job_id not in conn.jobs and len(conn.jobs) + len(conn.pending) >= (
            self.settings.max_job_subscriptions
        ):
            raise ClientError(
                "too_many_subscriptions",
                f"at most {self.settings.max_job_subscriptions} job subscriptions per connection",
            )
        owner = await store.job_owner(self.redis, job_id)
        if owner is None:
            raise ClientError("job_not_found", f"job {job_id} not found")
        if not conn.principal.may_see(owner):
            raise ClientError("forbidden", f"job {job_id} belongs to another user")
        partition = self.hub.space.of_user(owner)
        # Hold live events from now until the snapshot is out; the job's partition is read
        # from before the snapshot is taken, so nothing falls between the two.
        self.hub.watch_job(conn, job_id, partition.index)
        try:
            await self.partition_started(partition.index)
            state = await store.get_job(self.redis, job_id, partition)
        except BaseException:
            self.hub.unwatch_job(conn, job_id)
            raise
        if state is None:
            self.hub.unwatch_job(conn, job_id)
            raise ClientError("job_not_found", f"job {job_id} not found")
        answer = self._answer(conn, {"type": "subscribed", "jobId": job_id})
        self.hub.open_job(conn, job_id, state.snapshot_message())
        return answer

    async def unsubscribe_job(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        job_id = _text_field(msg, "jobId")
        self.hub.unwatch_job(conn, job_id)
        return self._answer(conn, {"type": "unsubscribed", "jobId": job_id})

    async def subscribe_channel(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        channel = _text_field(msg, "channel")
        if channel not in CHANNELS:
            raise ClientError("channel_not_found", f"unknown channel {channel!r}")
        role = CHANNELS[channel]
        if role == "ADMIN" and not conn.principal.is_admin:
            raise ClientError("forbidden", f"channel {channel!r} needs the {role} role")
        if channel not in conn.channels and len(conn.channels) >= (
            self.settings.max_channel_subscriptions
        ):
            raise ClientError("too_many_subscriptions", "too many channel subscriptions")
        self.hub.join_channel(conn, channel)
        return self._answer(conn, {"type": "subscribed", "channel": channel})

    async def unsubscribe_channel(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        channel = _text_field(msg, "channel")
        self.hub.leave_channel(conn, channel)
        return self._answer(conn, {"type": "unsubscribed", "channel": channel})

    async def ping(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        return self._answer(conn, {"type": "pong", "timestamp": now_ms()})

    async def ack(self, conn: Connection, msg: dict[str, Any]) -> None:
        event_id = _text_field(msg, "eventId")
        try:
            parse_event_id(event_id)
        except ValueError as exc:
            raise ClientError(
                "bad_request", "eventId must be a stream id like '1700000000000-0'"
            ) from exc
        await self.presence.advance(conn.user_id, "acked", event_id)
        return None

    async def refresh_token(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        token = _text_field(msg, "token", max_length=self.settings.jwt_max_length)
        try:
            principal = self.verifier.verify(token)
        except AuthError as exc:
            raise ClientError("invalid_token", exc.message) from exc
        if principal.user_id != conn.user_id:
            raise ClientError("invalid_token", "the new token is for another user")
        conn.principal = principal
        if not principal.is_admin:  # a role dropped by the new token ends what needed it
            for channel in [c for c in conn.channels if CHANNELS.get(c) == "ADMIN"]:
                self.hub.leave_channel(conn, channel)
        self.sessions.watch(conn)
        expires = principal.expires_at
        return self._answer(
            conn,
            {
                "type": "token_refreshed",
                "expiresAt": int(expires * 1000) if expires != float("inf") else None,
            },
        )
