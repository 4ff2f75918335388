"""JWT verification: the one place tokens are read (Socket.IO, native WebSocket, REST)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jwt

from notifier.contract.endpoints import ROUTING_HINT
from notifier.contract.settings import Settings
from notifier.edge.limits import AddressLimits

ADMIN_ROLES = frozenset({"ADMIN", "ROLE_ADMIN"})
#: The refusals of a credential itself (native close code 4401); the others
#: (too_many_connections, rate_limited) say "not now" (4429).
AUTH_CODES = frozenset({"auth_required", "invalid_token", "token_expired"})


class AuthError(Exception):
    """A refused credential; ``code``: auth_required, invalid_token, token_expired,
    too_many_connections, or rate_limited (too many failures from the client's address)."""

    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, for rate_limited


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str  # ``sub`` as a string: how ids are compared
    sub: str | int  # ``sub`` as the token has it (``userId`` keeps a numeric type)
    username: str | None
    roles: tuple[str, ...]
    expires_at: float  # epoch seconds

    @property
    def is_admin(self) -> bool:
        return any(role in ADMIN_ROLES for role in self.roles)

    def may_see(self, owner_id: str) -> bool:
        return self.is_admin or owner_id == self.user_id


def token_from(
    auth: Any = None, headers: Mapping[str, str] | None = None, query_string: str = ""
) -> str | None:
    """The token: Socket.IO ``auth.token``, else ``Authorization: Bearer``, else ``?token=``."""
    if isinstance(auth, Mapping):
        token = auth.get("token")
        if isinstance(token, str) and token:
            return token
    if headers:
        value = headers.get("authorization", "")
        scheme, _, credentials = value.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    if query_string:
        values = parse_qs(query_string).get("token")
        if values and values[0]:
            return values[0]
    return None


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._key = settings.verification_key()
        self._algorithms = list(settings.jwt_algorithms)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._max_length = settings.jwt_max_length

    def verify(self, token: str | None) -> Principal:
        if not token:
            raise AuthError("auth_required", "Authentication required: send a JWT")
        if len(token) > self._max_length:
            raise AuthError("invalid_token", "Invalid token: too long")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={
                    "require": ["exp"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                    # PyJWT insists on a string sub; the contract accepts numbers too.
                    "verify_sub": False,
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token_expired", "Token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("invalid_token", "Invalid token: not valid yet (nbf)") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("invalid_token", f"Invalid token: missing claim {exc.claim!r}") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("invalid_token", "Invalid token: wrong issuer") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("invalid_token", "Invalid token: wrong audience") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise AuthError("invalid_token", "Invalid token: algorithm not allowed") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("invalid_token", "Invalid token: bad signature") from exc
        except (jwt.InvalidTokenError, jwt.InvalidKeyError, ValueError) as exc:
            raise AuthError("invalid_token", "Invalid token: malformed") from exc
        return principal_from_claims(claims)


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    sub = claims.get("sub")
    if isinstance(sub, bool) or not isinstance(sub, (str, int)) or sub == "":
        raise AuthError("invalid_token", "Invalid token: missing or malformed 'sub'")
    username = claims.get("username") or claims.get("email")
    roles = claims.get("roles") or []
    if isinstance(roles, str):
        roles = [roles]
    if not isinstance(roles, list):
        raise AuthError("invalid_token", "Invalid token: 'roles' must be a list")
    exp = claims.get("exp")
    return Principal(
        user_id=str(sub),
        sub=sub,
        username=username if isinstance(username, str) else None,
        roles=tuple(str(role) for role in roles),
        expires_at=float(exp) if isinstance(exp, (int, float)) else float("inf"),
    )


def mint_token(
    secret: str,
    sub: str | int,
    *,
    roles: list[str] | None = None,
    username: str | None = None,
    ttl_seconds: float = 3600,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A signed token for development and tests (``jobcast token`` and the demo use it)."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl_seconds)}
    if roles:
        payload["roles"] = roles
    if username:
        payload["username"] = username
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm=algorithm)


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a request comes from: the client's address (``scope["client"]``: uvicorn puts
    the forwarded one there when the connection comes from ``JOBCAST_TRUSTED_PROXIES``,
    else the connection's own) and its routing hint ``uid`` (a hint only)."""

    address: str
    hint: str | None = None

    @classmethod
    def of(cls, client: Sequence[Any] | None, query_string: str = "") -> Peer:
        hints = parse_qs(query_string).get(ROUTING_HINT) if query_string else None
        return cls(str(client[0]) if client else "", hints[0] if hints else None)

    def hint_verdict(self, principal: Principal) -> str:
        """``match``, ``missing`` or ``mismatch``: the hint against the token's user."""
        if not self.hint:
            return "missing"
        return "match" if self.hint == principal.user_id else "mismatch"


class Gate:
    """Every transport's door: the token verified, failures counted per client address,
    and an address past ``JOBCAST_AUTH_FAILURE_BURST`` failures refused ``rate_limited``
    (whatever it sends) until its bucket refills."""

    def __init__(self, verifier: TokenVerifier, settings: Settings) -> None:
        self.verifier = verifier
        self._failures = AddressLimits(
            settings.auth_failure_rate_per_second, settings.auth_failure_burst
        )

    def verify(self, token: str | None, peer: Peer) -> Principal:
        wait = self._failures.blocked(peer.address)
        if wait:
            seconds = max(1, math.ceil(wait))
            raise AuthError(
                "rate_limited",
                f"Too many failed authentications from this address: retry in {seconds} s",
                seconds,
            )
        try:
            return self.verifier.verify(token)
        except AuthError:
            self._failures.failed(peer.address)
            raise
