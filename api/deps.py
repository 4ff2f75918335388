"""Request dependencies: the caller (from the JWT), admin checks, Redis."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from notifier import metrics
from notifier.auth import AuthError, Principal, TokenVerifier, token_from

bearer = HTTPBearer(auto_error=False, description="A JWT: `Authorization: Bearer <token>`")


def get_redis(request: Request) -> aioredis.Redis:
    client: aioredis.Redis = request.app.state.redis
    return client


def current_user(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    verifier: TokenVerifier = request.app.state.verifier
    token = token_from(None, request.headers, request.url.query)
    try:
        return verifier.verify(token)
    except AuthError as exc:
        metrics.AUTH_FAILURES.labels(exc.code, "rest").inc()
        raise ApiError(401, exc.code, exc.message, {"WWW-Authenticate": "Bearer"}) from exc


def admin_user(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not user.is_admin:
        raise ApiError(403, "forbidden", "This endpoint needs the ADMIN role")
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]
AdminUser = Annotated[Principal, Depends(admin_user)]
Redis = Annotated[aioredis.Redis, Depends(get_redis)]
