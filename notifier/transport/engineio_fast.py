"""Fast path, python-engineio: sessions whose WebSocket transport costs no task.

Used only when :func:`notifier.transport.compat.choose` says ``fast``; every private name
of python-engineio it relies on is listed in :data:`notifier.transport.compat.NEEDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import engineio
import engineio.async_socket
import engineio.exceptions
from engineio import packet as eio_packet

from notifier.transport import inline
from notifier.transport.frames import WRITE_FRAME, WriteFrame
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
    - the reader is the connection's own ASGI task, under one deadline that each received
      frame moves (a silent peer is dropped after ping interval + ping timeout, as
      upstream);
    - the next ping is a loop timer, not a sleeping task.

    Long-polling keeps upstream's queue, which each GET drains (``poll``, without a task
    per wait).
    """

    last_ping: float | None
    connected: bool
    _ws: Any = None  # the Engine.IO WebSocket while this session is on one
    _write_frame: WriteFrame | None = None  # the server's frame writer for that WebSocket
    _flushing: asyncio.Task[None] | None = None  # writes what a waiting send held back
    _ping: asyncio.TimerHandle | None = None
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
            loop = asyncio.get_running_loop()
            self._ping = loop.call_later(self.server.ping_interval, self._send_ping_now)

    def _send_ping_now(self) -> None:
        self._ping = None
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.push(eio_packet.Packet(eio_packet.PING))

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        if self._ping is not None:
            self._ping.cancel()
            self._ping = None
        # As upstream, the client closes the WebSocket once it has the CLOSE packet (a
        # silent one is dropped at the read deadline). Closing it from here as well went
        # with python-engineio clients left with open aiohttp sessions in test runs.
        await super().close(wait=wait, abort=abort, reason=reason)

    async def _upgrade_websocket(self, environ: dict[str, Any]) -> Any:
        extensions = environ.get("asgi.scope", {}).get("extensions") or {}
        self._write_frame = extensions.get(WRITE_FRAME)
        try:
            return await super()._upgrade_websocket(environ)
        finally:
            self._write_frame = None

    async def _websocket_handler(self, ws: Any) -> None:
        server = self.server
        limit = server.ping_interval + server.ping_timeout
        loop = asyncio.get_running_loop()
        if self.connected:  # polling until now: upstream's upgrade exchange first
            try:
                async with asyncio.timeout(limit):
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
        try:
            async with asyncio.timeout(loop.time() + limit) as deadline:
                while not self.closed:
                    data = await ws.wait()
                    deadline.reschedule(loop.time() + limit)
                    if data and len(data) > server.max_http_buffer_size:
                        break  # as upstream: an oversized frame ends the session
                    try:
                        await self.receive(eio_packet.Packet(encoded_packet=data))
                    except engineio.exceptions.UnknownPacketError:
                        pass
                    except engineio.exceptions.SocketIsClosedError:
                        break
        except (TimeoutError, OSError, ValueError):
            pass  # a silent peer, a disconnect, an undecodable frame: the session ends
        finally:
            self._ws = None
            if self._flushing is not None:
                self._flushing.cancel()
        with contextlib.suppress(Exception):
            await ws.close()
        await self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)

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


class FastEngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server: sessions without tasks of their own (:class:`FastSocket`).

    - ``disconnect`` does not wait for the client to fetch its CLOSE packet. Upstream waits
      until the session's queue is drained, which for a polling client that holds no GET is
      never: the request that closes the session (an oversized POST answered 400, the
      authentication timeout's timer) would hang with it, and the session with it. The
      CLOSE packet is still queued for the next GET (or written to the WebSocket); a later
      request of the session is answered 400.
    - The service task that drops sessions whose client stopped answering pings checks
      them all in one pass every quarter of the ping timeout. Upstream spreads one pass
      over a ping timeout with a wait per session, each ``asyncio.wait_for`` a task: with
      thousands of idle connections, most of the server's idle CPU.
    """

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
        interval = max(0.5, self.ping_timeout / 4)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
            deadline = time.time() - self.ping_timeout
            for sid, socket in list(self.sockets.items()):
                if socket.closed:
                    self.sockets.pop(sid, None)
                elif not socket.closing and socket.last_ping and socket.last_ping < deadline:
                    try:
                        await socket.check_ping_timeout()  # closes it
                    except Exception:
                        log.exception("closing a silent session failed", extra={"eio_sid": sid})


def adopt(eio_server: Any, eio_sid: str) -> None:
    """Make the session python-engineio just built for ``eio_sid`` a :class:`FastSocket`.

    python-engineio constructs its sessions itself; :class:`FastSocket` adds state and
    methods only, so the object keeps everything upstream gave it."""
    socket = eio_server.sockets.get(eio_sid)
    if type(socket) is engineio.async_socket.AsyncSocket:
        socket.__class__ = FastSocket
