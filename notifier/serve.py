"""Run an ASGI entry point under uvicorn with jobcast's transport limits and log redaction."""

from __future__ import annotations

import argparse

import uvicorn
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from notifier.logs import configure, logging_config
from notifier.settings import get_settings


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with two changes.

    - It answers the handshakes websockets refuses: for a request line or header over its
      limits (8 KiB) websockets queues a 414/431 response, but uvicorn 0.54 writes a
      rejected handshake's response only once a request was parsed, so the client would be
      held, unanswered, until it gives up.
    - It does not keep the handshake's request and response once the connection is open.
    - Frames sent in one turn of the event loop leave in one ``transport.write`` (one
      system call) instead of one each: websockets keeps the frames until
      ``data_to_send()``, which a callback scheduled with the first one calls. Any other
      write of the connection (a close, a pong) takes them first, in order. Flow control
      is unchanged: while the transport is paused, sends go through uvicorn's own path,
      which waits.
    """

    _flush_scheduled = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if (
            not self.handshake_initiated
            and self.conn.handshake_exc is not None
            and not self.transport.is_closing()
        ):
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    async def send(self, message: ASGISendEvent) -> None:
        if (
            message["type"] != "websocket.send"
            or not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
        ):
            await super().send(message)
            if message["type"] == "websocket.accept" and self.handshake_complete:
                # The handshake's request and response (two header maps) are not read
                # again; the ASGI scope keeps the headers the app needs.
                del self.request, self.response
            return
        text, data = message.get("text"), message.get("bytes")
        try:
            if data is not None:
                self.conn.send_binary(data)
            elif text is not None:
                self.conn.send_text(text.encode())
        except InvalidState:
            raise ClientDisconnected() from None
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        output = self.conn.data_to_send()
        if output and not self.transport.is_closing():
            self.transport.write(b"".join(output))


def main(default_app: str, argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=f"Serve {default_app} with uvicorn")
    parser.add_argument("--app", default=default_app, help="ASGI entry point (module:attr)")
    parser.add_argument("--host", default=settings.http_host)
    parser.add_argument("--port", type=int, default=settings.http_port)
    args = parser.parse_args(argv)
    configure(settings.log_level, settings.log_format, settings.log_levels)
    uvicorn.run(
        args.app,
        host=args.host,
        port=args.port,
        log_config=logging_config(settings.log_level, settings.log_format, settings.log_levels),
        # The server's own WebSocket frame limit, aligned with Engine.IO's
        # max_http_buffer_size (uvicorn would read up to 16 MiB first).
        ws=WebSocketProtocol,
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,
        # WebSocket-level pings for every WebSocket (the native endpoint's heartbeat).
        ws_ping_interval=settings.heartbeat_seconds,
        ws_ping_timeout=settings.heartbeat_seconds,
        timeout_keep_alive=5,
        proxy_headers=True,
        server_header=False,
    )
