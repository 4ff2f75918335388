"""What the client adapters (Socket.IO, native WebSocket) need of the Notifier, and no more.

:class:`notifier.core.service.Notifier` implements it; the adapters depend on this
interface, so they can be read, and tested, without the rest of the service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from notifier.contract.settings import Settings
from notifier.core.hub import Connection
from notifier.edge.auth import Peer, Principal, TokenVerifier
from notifier.edge.commands import Commands
from notifier.edge.limits import RateLimiter
from notifier.edge.origins import OriginPolicy


class NotifierPort(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def verifier(self) -> TokenVerifier: ...

    @property
    def origins(self) -> OriginPolicy: ...

    @property
    def native_frames(self) -> Callable[[dict[str, Any]], str]:
        """The native endpoint's text of a message, encoded once for all its recipients."""

    @property
    def commands(self) -> Commands:
        """The client commands (subscribe_job, ping, ...), answered on the connection."""

    def rate_limiter(self) -> RateLimiter: ...

    async def authenticate(
        self, token: str | None, conn_id: str, peer: Peer, transport: str
    ) -> Principal:
        """Verify the token (per-address failure limits), take a connection slot for the
        user, count the routing hint; or raise ``AuthError`` (already counted and logged)."""

    async def establish(self, conn: Connection, last_event_id: str | None) -> bool:
        """Register, greet and replay; returns ``recovered``."""

    async def release(self, conn: Connection) -> None: ...

    def auth_refused(self, reason: str, transport: str, peer: Peer) -> None: ...
