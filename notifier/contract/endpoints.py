"""The paths clients connect to (SPEC section 3): one definition for server, clients and tests."""

from __future__ import annotations

#: Socket.IO (Engine.IO polling and WebSocket).
SOCKETIO_PATH = "/ws/job-status"
#: The plain WebSocket endpoint speaking the same JSON messages.
NATIVE_PATH = "/ws/job-status-native"
