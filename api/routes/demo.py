"""The demo page at ``/``, its static files, and the demo token endpoint (``JOBCAST_DEMO=1``).

- ``GET /``: the demo page when demo mode is on, else a redirect to ``/docs``.
- ``/static/...``: the page's own files (``api/static``), always served, no token needed.
- ``/static/vendor/socket.io.min.js`` (and the rest of the package's ``dist`` folder):
  socket.io-client as npm installed it in ``node_modules`` (``make web``); never copied.
- ``GET /api/v1/demo/users`` and ``POST /api/v1/demo/token``: exist only in demo mode
  (404 otherwise). The token endpoint hands out development JWTs for fixed demo users:
  anyone who can reach it can act as those users, which is why it is off by default.
  Tokens are never logged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from api.cli import TokenError, dev_token
from api.errors import ApiError
from notifier.contract.settings import Settings

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
#: Where ``npm ci`` (``make web``) puts socket.io-client: the repository root (the parent of
#: the ``api`` package), else the working directory's ``node_modules``.
VENDOR_CANDIDATES = (
    STATIC_DIR.parent.parent / "node_modules" / "socket.io-client" / "dist",
    Path(os.getcwd()) / "node_modules" / "socket.io-client" / "dist",
)
DEMO_TOKEN_TTL_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class DemoUser:
    key: str
    label: str
    sub: str | int
    username: str
    roles: tuple[str, ...] = ()

    def public(self) -> dict[str, Any]:
        return {
            "user": self.key,
            "label": self.label,
            "userId": self.sub,
            "username": self.username,
            "roles": list(self.roles),
        }


DEMO_USERS = {
    user.key: user
    for user in (
        DemoUser("user1", "User 1", 1, "user1@example.com"),
        DemoUser("user2", "User 2", 2, "user2@example.com"),
        DemoUser("admin", "Admin", "admin", "admin@example.com", ("ADMIN",)),
    )
}


class DemoTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    user: Literal["user1", "user2", "admin"] = Field(description="Which demo user")
    ttlSeconds: int = Field(
        default=DEMO_TOKEN_TTL_SECONDS, ge=1, le=24 * 3600, description="Token lifetime"
    )


router = APIRouter(prefix="/api/v1/demo", tags=["demo"])


@router.get("/users", summary="The demo users (demo mode only)")
async def demo_users() -> dict[str, Any]:
    users = [user.public() for user in DEMO_USERS.values()]
    return {"message": "Demo users", "data": {"users": users}}


@router.post("/token", summary="A development token for a demo user (demo mode only)")
async def demo_token(body: DemoTokenRequest, request: Request) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    user = DEMO_USERS[body.user]
    try:
        token = dev_token(
            settings,
            user.sub,
            username=user.username,
            roles=user.roles,
            ttl_seconds=body.ttlSeconds,
        )
    except TokenError as exc:
        raise ApiError(503, "unavailable", f"No demo token: {exc}") from exc
    expires_at = (int(time.time()) + body.ttlSeconds) * 1000
    return {
        "message": "Demo token issued",
        "data": {"token": token, "expiresAt": expires_at, **user.public()},
    }


def vendor_dir() -> Path | None:
    """socket.io-client's ``dist`` folder, if ``npm ci`` has installed it."""
    return next((path for path in VENDOR_CANDIDATES if path.is_dir()), None)


def install(app: FastAPI, settings: Settings) -> None:
    """Add the page, the static files and (in demo mode) the demo API to ``app``."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False, response_model=None)
    async def index() -> Response:
        if not settings.demo:
            return RedirectResponse("/docs", status_code=307)
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.api_route(
        "/static/vendor/{name}", methods=["GET", "HEAD"], include_in_schema=False,
        response_model=None,
    )  # fmt: skip
    async def vendor(name: str) -> Response:
        folder = vendor_dir()
        if folder is None:
            raise ApiError(
                404,
                "not_found",
                "socket.io-client is not installed: it is served from node_modules; "
                "run `make web` (npm ci) in the repository",
            )
        path = folder / name
        # Only plain file names of the package's dist folder (the route admits no "/").
        if name.startswith(".") or not path.is_file():
            raise ApiError(404, "not_found", f"/static/vendor/{name} not found")
        media = "text/javascript" if name.endswith(".js") else "application/json"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if settings.demo:
        app.include_router(router)
