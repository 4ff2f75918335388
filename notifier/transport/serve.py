"""Run an ASGI entry point under uvicorn with jobcast's transport limits and log redaction."""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from notifier.contract.settings import Settings, get_settings
from notifier.observability.logs import configure, logging_config
from notifier.transport import compat

#: uvicorn's own WebSocket implementation on the stock path (the one the fast path extends).
STOCK_WEBSOCKET = "websockets-sansio"


def websocket_protocol(settings: Settings) -> Any:
    """uvicorn's ``ws`` option: jobcast's protocol on the fast path, uvicorn's own otherwise."""
    if compat.choose(settings.fast_transport) == compat.FAST:
        from notifier.transport.uvicorn_fast import FastWebSocketProtocol

        return FastWebSocketProtocol
    return STOCK_WEBSOCKET


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
        ws=websocket_protocol(settings),
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,
        # WebSocket-level pings for every WebSocket (the native endpoint's heartbeat).
        ws_ping_interval=settings.heartbeat_seconds,
        ws_ping_timeout=settings.heartbeat_seconds,
        timeout_keep_alive=5,
        # X-Forwarded-For/-Proto from the load balancers only (JOBCAST_TRUSTED_PROXIES):
        # scope["client"] is then the real client, for logs and per-address limits.
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
        server_header=False,
    )
