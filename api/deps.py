"""Request dependencies: the caller (from the JWT), admin checks, Redis."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from notifier.core.bus import AsyncRedis
from notifier.edge.auth import AuthError, Gate, Peer, Principal, token_from
from notifier.edge.limits import UserRateLimits
from notifier.observability import metrics

bearer = HTTPBearer(auto_error=False, description="A JWT: `Authorization: Bearer <token>`")


# Dependencies are coroutines: FastAPI runs plain functions in a worker thread, and
# anyio's hand-off walks every task of the loop (tens of thousands with the notifier's
# connections) on each call. They do no blocking I/O.


async def get_redis(request: Request) -> AsyncRedis:
    client: AsyncRedis = request.app.state.redis
    return client


async def current_user(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    gate: Gate = request.app.state.gate
    token = token_from(None, request.headers, request.url.query)
    try:
        user = gate.verify(token, Peer.of(request.scope.get("client")))
    except AuthError as exc:
        metrics.AUTH_FAILURES.labels(exc.code, "rest").inc()
        if exc.code == "rate_limited":  # this address failed too often: 429, not 401
            metrics.CLIENT_ERRORS.labels("rate_limited").inc()
            raise ApiError(
                429, exc.code, exc.message, {"Retry-After": str(exc.retry_after or 1)}
            ) from exc
        raise ApiError(401, exc.code, exc.message, {"WWW-Authenticate": "Bearer"}) from exc
    limits: UserRateLimits = request.app.state.rate_limits
    wait = limits.check(user.user_id)
    if wait:
        metrics.CLIENT_ERRORS.labels("rate_limited").inc()
        raise ApiError(
            429,
            "rate_limited",
            "Too many requests: slow down",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return user


async def admin_user(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not user.is_admin:
        raise ApiError(403, "forbidden", "This endpoint needs the ADMIN role")
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]
AdminUser = Annotated[Principal, Depends(admin_user)]
Redis = Annotated[AsyncRedis, Depends(get_redis)]
