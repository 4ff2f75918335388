"""The paths clients connect to (SPEC section 3): one definition for server, clients and tests."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

#: Socket.IO (Engine.IO polling and WebSocket).
SOCKETIO_PATH = "/ws/job-status"
#: The plain WebSocket endpoint speaking the same JSON messages.
NATIVE_PATH = "/ws/job-status-native"

#: The routing hint (SPEC section 10): the query parameter every client adds to every
#: Socket.IO and native request, the user id, so that a load balancer hashing it sends all
#: of one user's requests (each long-poll, the WebSocket upgrade) to one notifier.
ROUTING_HINT = "uid"


def routing_hint(token: str) -> str | None:
    """The ``sub`` claim of a JWT, read without verifying it (a hint, not an identity: the
    server verifies the token and decides who the user is); None when it is not one."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    if isinstance(sub, int) and not isinstance(sub, bool):
        return str(sub)  # the user id as the server compares it (a numeric sub as text)
    return sub if isinstance(sub, str) and sub else None


def with_routing_hint(url: str, uid: str | None) -> str:
    """``url`` with ``uid=<uid>`` in its query, replacing any (unchanged when ``uid`` is
    None)."""
    if uid is None:
        return url
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k != ROUTING_HINT]
    # Percent-encoded (%20, not "+"), as engine.io-client encodes it: the load balancers
    # decode the hint before hashing it.
    query = urlencode([*kept, (ROUTING_HINT, uid)], quote_via=quote)
    return urlunsplit(parts._replace(query=query))
