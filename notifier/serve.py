"""Run an ASGI entry point under uvicorn with jobcast's transport limits and log redaction."""

from __future__ import annotations

import argparse

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from notifier.logs import configure, logging_config
from notifier.settings import get_settings


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, answering the handshakes websockets refuses.

    For a request line or header over its limits (8 KiB), websockets queues a 414/431
    response and waits, but uvicorn 0.54 writes a rejected handshake's response only once
    a request was parsed: the client would be held, unanswered, until it gives up.
    """

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if (
            not self.handshake_initiated
            and self.conn.handshake_exc is not None
            and not self.transport.is_closing()
        ):
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()


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
