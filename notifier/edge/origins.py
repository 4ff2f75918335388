"""Which browser origins may open a connection: one policy for every transport and REST."""

from __future__ import annotations

from collections.abc import Iterable


class OriginPolicy:
    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = frozenset(origin.rstrip("/") for origin in allowed)

    def allows(self, origin: str | None, *, scheme: str, host: str | None) -> bool:
        """A request without ``Origin`` (not a browser) passes here and still needs its token;
        a browser's origin must be listed or be the server's own."""
        if origin is None:
            return True
        origin = origin.rstrip("/")
        if origin in self.allowed:
            return True
        return host is not None and origin == f"{scheme}://{host}"
