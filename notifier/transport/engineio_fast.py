"""Fast path, python-engineio: sessions whose WebSocket transport costs no task.

Used only when :func:`notifier.transport.compat.choose` says ``fast``; every private name
of python-engineio it relies on is listed in :data:`notifier.transport.compat.NEEDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import engineio
import engineio.async_socket
import engineio.exceptions
from engineio import packet as eio_packet

from notifier.transport import inline
from notifier.transport.frames import KEEPALIVE_OFF, RUN_AFTER, WRITE_FRAME, WriteFrame
from notifier.transport.lazy_queue import LazyQueue

log = logging.getLogger(__name__)


class FastSocket(engineio.async_socket.AsyncSocket):  # type: ignore[misc]
    """python-engineio's session, with a WebSocket transport that costs no task.

    Upstream runs, per WebSocket session, a writer task fed by a queue, a task per received
    frame (``asyncio.wait_for`` around each read) and a ping task; a message to thousands
    of sessions wakes thousands of writer tasks. Here, on a WebSocket:

    - a packet is written by the call that sends it (:meth:`push`; the server's ``send`` is
      run eagerly, :mod:`notifier.transport.inline`); only if that write has to wait (flow
      control) do
      later packets queue, behind it, for a task that exists until they are written;
    - the reader is the connection's own ASGI task; each received frame stamps the time,
      and a peer silent for ping interval + ping timeout is dropped (as upstream) by the
      server's sweep (:meth:`FastEngineServer._service_task`), which cancels the read;
      where the server offers it (:data:`~notifier.transport.frames.RUN_AFTER`), the read
      loop goes on in that task after the ASGI call has returned, so that an idle
      connection does not hold the call's frames (about 3 KiB);
    - the next ping is a due time that the same sweep sends, not a sleeping task nor a
      loop timer: an idle session holds no timer at all (uvicorn's own WebSocket pings are
      turned off for it, :data:`~notifier.transport.frames.KEEPALIVE_OFF`).

    Long-polling keeps upstream's queue, which each GET drains (``poll``, without a task
    per wait).
    """

    last_ping: float | None
    connected: bool
    _ws: Any = None  # the Engine.IO WebSocket while this session is on one
    _write_frame: WriteFrame | None = None  # the server's frame writer for that WebSocket
    _flushing: asyncio.Task[None] | None = None  # writes what a waiting send held back
    _ping_at = 0.0  # wall clock time the next ping is due (0: none scheduled)
    _reader: asyncio.Task[Any] | None = None  # the task reading the WebSocket
    _heard = 0.0  # loop time of the last frame received on the WebSocket
    _deaf = False  # the sweep cancelled the read: nothing heard for too long
    _run_after: Callable[[Coroutine[Any, Any, None]], None] | None = None  # RUN_AFTER
    #: Called once the session has moved from long-polling to a WebSocket.
    on_upgrade: Callable[[], None] | None = None

    async def poll(self) -> list[eio_packet.Packet]:
        queue = self.queue
        try:
            if queue.empty():
                async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                    first = await queue.get()
            else:
                first = queue.get_nowait()
            queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise engineio.exceptions.QueueEmpty() from None
        if first is None:
            return []
        packets = [first]
        while not queue.empty():
            pkt = queue.get_nowait()
            queue.task_done()
            if pkt is None:
                queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets

    async def send(self, pkt: eio_packet.Packet) -> None:
        if await self.check_ping_timeout():
            self.push(pkt)

    def push(self, pkt: eio_packet.Packet) -> None:
        """Write ``pkt`` to the WebSocket now, or queue it (polling, upgrading, backed up)."""
        ws = self._ws
        if ws is None or self._flushing is not None or self.upgrading or not self.queue.empty():
            self.queue.put_nowait(pkt)
            self._flush()
            return
        frame = getattr(pkt, "frame", None)
        if frame is not None and self._write_frame is not None and self._write_frame(frame):
            return
        try:
            pending = inline.start(ws.send(pkt.encode()))
        except Exception as exc:  # the connection is gone: its reader ends the session
            self._broken(exc)
            return
        if pending is not None:
            self._flushing = pending
            pending.add_done_callback(self._flushed)

    def _flush(self) -> None:
        if (
            self._ws is not None
            and self._flushing is None
            and not self.upgrading
            and not self.queue.empty()
        ):
            try:
                pending = inline.start(self._write_queued())
            except Exception as exc:
                self._broken(exc)
                return
            if pending is not None:
                self._flushing = pending
                pending.add_done_callback(self._flushed)

    async def _write_queued(self) -> None:
        while self._ws is not None and not self.queue.empty():
            pkt = self.queue.get_nowait()
            self.queue.task_done()
            if pkt is None:
                return
            await self._ws.send(pkt.encode())

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushing = None
        if not task.cancelled() and task.exception() is not None:
            self._broken(task.exception())
        else:
            self._flush()

    def _broken(self, exc: BaseException | None) -> None:
        log.debug("websocket write failed", extra={"eio_sid": self.sid, "error": repr(exc)})
        self._ws = None  # packets queue (bounded by the outbox) until the reader ends

    def schedule_ping(self) -> None:
        if self.last_ping:  # only once the previous ping was answered
            self.last_ping = None
            self._ping_at = time.time() + self.server.ping_interval

    def ping_if_due(self, now: float) -> None:
        """The server's periodic pass: send the ping that is due."""
        if self._ping_at and self._ping_at <= now:
            self._ping_at = 0.0
            if not self.closing and not self.closed:
                self.last_ping = now
                self.push(eio_packet.Packet(eio_packet.PING))

    def drop_if_silent(self, loop_now: float, silent_for: float) -> None:
        """The server's periodic pass: end a WebSocket read silent for ``silent_for``."""
        reader = self._reader
        if reader is not None and not self._deaf and loop_now - self._heard > silent_for:
            self._deaf = True
            reader.cancel()

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        self._ping_at = 0.0
        # As upstream, the client closes the WebSocket once it has the CLOSE packet (a
        # silent one is dropped at the read deadline). Closing it from here as well went
        # with python-engineio clients left with open aiohttp sessions in test runs.
        await super().close(wait=wait, abort=abort, reason=reason)
        if self.closed and not self.upgraded:
            # A long-polling GET still waiting for packets ends now rather than at its
            # timeout (ping interval + ping timeout): it holds the session, and all the
            # connection's objects with it, after a client that sent CLOSE has left.
            self.queue.put_nowait(None)

    def _upgrade_websocket(self, environ: dict[str, Any]) -> Coroutine[Any, Any, Any]:
        # Not a coroutine of its own (the connection's task would hold its frame for as
        # long as the connection lives): upstream's, once the server's extensions are read.
        extensions = environ.get("asgi.scope", {}).get("extensions") or {}
        self._write_frame = extensions.get(WRITE_FRAME)  # dropped when the reader ends
        self._run_after = extensions.get(RUN_AFTER)  # dropped by the handler
        keepalive_off = extensions.get(KEEPALIVE_OFF)
        if keepalive_off is not None:
            keepalive_off()  # Engine.IO's pings and read deadline are the heartbeat
        upgrade: Coroutine[Any, Any, Any] = super()._upgrade_websocket(environ)
        return upgrade

    async def _websocket_handler(self, ws: Any) -> None:
        run_after = self._run_after
        if run_after is not None:
            del self._run_after
        if self.connected:  # polling until now: upstream's upgrade exchange first
            server = self.server
            try:
                async with asyncio.timeout(server.ping_interval + server.ping_timeout):
                    upgraded = await self._upgrade(ws)
            except (TimeoutError, OSError, ValueError):
                upgraded = False
            if not upgraded:
                return  # the session goes on polling
        if self.connected and self.on_upgrade is not None:
            self.on_upgrade()
        self.connected = self.upgraded = True
        self._ws = ws
        self._flush()  # what was queued before (the OPEN packet, a CONNECT answer)
        if run_after is not None:
            # The read goes on in the connection's task once the ASGI call has returned
            # (python-engineio's WebSocket answers nothing after its handler).
            run_after(self._read_websocket(ws))
        else:
            await self._read_websocket(ws)

    async def _read_websocket(self, ws: Any) -> None:
        """The WebSocket's packets, read until the peer goes or the session is closed."""
        server = self.server
        loop = asyncio.get_running_loop()
        reader = self._reader = asyncio.current_task()
        self._heard = loop.time()
        reading: set[FastSocket] | None = getattr(server, "reading", None)
        if reading is not None:  # swept until the read ends, closed session or not
            reading.add(self)
        # uvicorn's receive, awaited here rather than through the driver's ``wait``: one
        # coroutine frame less held by every idle connection (and the same events read).
        receive = getattr(ws, "asgi_receive", None) or _waiting(ws)
        try:
            while not self.closed:
                event = await receive()
                self._heard = loop.time()
                if event["type"] != "websocket.receive":
                    break  # the peer went away
                data = event.get("bytes")
                if data is None:
                    data = event.get("text")
                if data is None:
                    break  # as upstream's driver: nothing to decode ends the session
                if data and len(data) > server.max_http_buffer_size:
                    break  # as upstream: an oversized frame ends the session
                try:
                    await self.receive(eio_packet.Packet(encoded_packet=data))
                except engineio.exceptions.UnknownPacketError:
                    pass
                except engineio.exceptions.SocketIsClosedError:
                    break
                # Not held while the next frame is awaited: the last frame received (a
                # CONNECT's token, for one) would stay in memory for an idle connection.
                del event, data
        except (OSError, ValueError):
            pass  # a disconnect, an undecodable frame: the session ends
        except asyncio.CancelledError:
            # The sweep's cancel of a silent peer's read ends the session; any other
            # cancellation goes on.
            if not self._deaf or reader is None or reader.uncancel() > 0:
                raise
        finally:
            self._ws = None
            self._write_frame = None
            self._reader = None
            if reading is not None:
                reading.discard(self)
            if self._flushing is not None:
                self._flushing.cancel()
        with contextlib.suppress(Exception):
            await ws.close()
        await self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)
        if server.sockets.get(self.sid) is self:
            # As python-engineio's request handling does once the WebSocket handler ends
            # (which, read after the ASGI call, it no longer sees).
            del server.sockets[self.sid]

    async def _upgrade(self, ws: Any) -> bool:
        """Upstream's polling → WebSocket upgrade: the probe, then the UPGRADE packet."""
        self.upgrading = True  # packets queue meanwhile; a pending GET gets a NOOP
        try:
            probe = eio_packet.Packet(encoded_packet=await ws.wait())
            if probe.packet_type != eio_packet.PING or probe.data != "probe":
                log.info("failed websocket upgrade: no probe", extra={"eio_sid": self.sid})
                return False
            await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # ends the pending GET
            done = eio_packet.Packet(encoded_packet=await ws.wait())
            if done.packet_type != eio_packet.UPGRADE:
                log.info("failed websocket upgrade: no UPGRADE", extra={"eio_sid": self.sid})
                return False
            return True
        finally:
            self.upgrading = False


def _waiting(ws: Any) -> Callable[[], Coroutine[Any, Any, dict[str, Any]]]:
    """An ASGI receive of a driver without one: its ``wait``, as events."""

    async def receive() -> dict[str, Any]:
        try:
            data = await ws.wait()
        except OSError:
            return {"type": "websocket.disconnect"}
        return {"type": "websocket.receive", "text": data}

    return receive


class FastEngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server: sessions without tasks of their own (:class:`FastSocket`).

    - ``disconnect`` does not wait for the client to fetch its CLOSE packet. Upstream waits
      until the session's queue is drained, which for a polling client that holds no GET is
      never: the request that closes the session (an oversized POST answered 400, the
      authentication timeout's timer) would hang with it, and the session with it. The
      CLOSE packet is still queued for the next GET (or written to the WebSocket); a later
      request of the session is answered 400.
    - The service task that drops sessions whose client stopped answering pings checks
      them all in one pass every quarter of the ping timeout (or of the ping interval, if
      shorter). Upstream spreads one pass over a ping timeout with a wait per session, each
      ``asyncio.wait_for`` a task: with thousands of idle connections, most of the
      server's idle CPU. The same pass sends the pings that are due and drops WebSocket
      readers silent for ping interval + ping timeout (:meth:`FastSocket.drop_if_silent`,
      also once the session is closed), so that an idle session holds no timer of its own.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Sessions reading a WebSocket, swept for silence even once closed and dropped
        #: from ``sockets`` (a peer that never answers a server's CLOSE).
        self.reading: set[FastSocket] = set()

    def create_queue(self, *args: Any, **kwargs: Any) -> LazyQueue[Any]:
        return (
            LazyQueue()
        )  # a session's packets: empty but for moments (notifier.transport.lazy_queue)

    async def disconnect(self, sid: str | None = None) -> None:
        if sid is None:
            await super().disconnect()
            return
        socket = self.sockets.get(sid)
        if socket is not None:
            await socket.close(wait=False, reason=self.reason.SERVER_DISCONNECT)
            self.sockets.pop(sid, None)

    async def _service_task(self) -> None:
        self.service_task_event = stop = self.create_event()
        interval = max(0.25, min(self.ping_timeout, self.ping_interval) / 4)
        silent_for = self.ping_interval + self.ping_timeout
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
            now = time.time()
            loop_now = loop.time()
            deadline = now - self.ping_timeout
            for sid, socket in list(self.sockets.items()):
                if socket.closed:
                    self.sockets.pop(sid, None)
                    continue
                if isinstance(socket, FastSocket):
                    socket.ping_if_due(now)
                if not socket.closing and socket.last_ping and socket.last_ping < deadline:
                    try:
                        await socket.check_ping_timeout()  # closes it
                    except Exception:
                        log.exception("closing a silent session failed", extra={"eio_sid": sid})
            for socket in list(self.reading):
                socket.drop_if_silent(loop_now, silent_for)


def adopt(eio_server: Any, eio_sid: str) -> None:
    """Make the session python-engineio just built for ``eio_sid`` a :class:`FastSocket`.

    python-engineio constructs its sessions itself; :class:`FastSocket` adds state and
    methods only, so the object keeps everything upstream gave it."""
    socket = eio_server.sockets.get(eio_sid)
    if type(socket) is engineio.async_socket.AsyncSocket:
        socket.__class__ = FastSocket
