"""``/api/v1/websocket``: connection statistics, user status, admin broadcasts and channel
messages."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

import redis
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import AdminUser, CurrentUser, Redis
from api.errors import ApiError
from notifier.contract.events import (
    CHANNEL_DATA_MAX_BYTES,
    CHANNEL_MESSAGE_MAX_CHARS,
    CHANNELS,
    Event,
    channel_message,
    dumps,
    maintenance_notification,
    system_notification,
)
from notifier.contract.keys import keyspace
from notifier.core import bus, stats
from notifier.edge.auth import Principal

router = APIRouter(prefix="/api/v1/websocket", tags=["websocket"])


class SystemBroadcast(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    message: str = Field(min_length=1, max_length=2000)
    level: Literal["info", "warning", "error", "critical"] = "info"


class MaintenanceBroadcast(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    message: str = Field(min_length=1, max_length=2000)
    startsAt: int | None = Field(default=None, ge=0, description="Epoch milliseconds")
    durationMinutes: int | None = Field(default=None, ge=0, le=7 * 24 * 60)


class ChannelBroadcast(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    message: str = Field(min_length=1, max_length=CHANNEL_MESSAGE_MAX_CHARS)
    level: Literal["info", "warning", "error", "critical"] = "info"
    data: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Any JSON object, at most {CHANNEL_DATA_MAX_BYTES} bytes as JSON",
    )

    @field_validator("data")
    @classmethod
    def _data_fits(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(dumps(value).encode())
        if size > CHANNEL_DATA_MAX_BYTES:
            raise ValueError(f"is {size} bytes as JSON; at most {CHANNEL_DATA_MAX_BYTES}")
        return value


async def known_channel(name: Annotated[str, Path(description="A channel")]) -> str:
    """The channel named in the path, or 404 ``channel_not_found`` (before the body is read)."""
    if name not in CHANNELS:
        raise ApiError(404, "channel_not_found", f"Unknown channel; one of {', '.join(CHANNELS)}")
    return name


Channel = Annotated[str, Depends(known_channel)]


def _user_id_out(user_id: str) -> str | int:
    return int(user_id) if user_id.isdigit() and len(user_id) < 19 else user_id


async def _broadcast(
    request: Request, client: Any, event: Event, sender: Principal
) -> dict[str, Any]:
    """Publish to every partition; the ``eventId`` answered is the one in the sender's feed
    (each partition's copy has its own id)."""
    event = dataclasses.replace(event, user_id=sender.user_id)
    try:
        event_id = await bus.publish(client, event, request.app.state.settings)
    except (redis.RedisError, OSError) as exc:
        raise ApiError(503, "unavailable", "Redis is unavailable; nothing was sent") from exc
    return {"eventId": event_id, "type": event.type}


@router.get("/stats", summary="Connection statistics of every notifier instance (ADMIN)")
async def get_stats(_: AdminUser, client: Redis) -> dict[str, Any]:
    return {
        "message": "WebSocket statistics retrieved successfully",
        "data": await stats.cluster_stats(client),
    }


@router.get("/user/{userId}/status", summary="Whether a user is connected (that user or ADMIN)")
async def user_status(
    userId: str, request: Request, user: CurrentUser, client: Redis
) -> dict[str, Any]:
    if not user.may_see(userId):
        raise ApiError(403, "forbidden", "You may only read your own status")
    space = keyspace(request.app.state.settings.partitions)
    connections = await stats.user_connections(client, space, userId)
    return {
        "message": "User status retrieved successfully",
        "data": {
            "userId": _user_id_out(userId),
            "connected": connections > 0,
            "connections": connections,
        },
    }


@router.post("/broadcast/system", summary="Send a system notification to everyone (ADMIN)")
async def broadcast_system(
    body: SystemBroadcast, request: Request, admin: AdminUser, client: Redis
) -> dict[str, Any]:
    event = system_notification(body.message, body.level)
    data = await _broadcast(request, client, event, admin)
    return {"message": "System notification sent", "data": data}


@router.post("/broadcast/maintenance", summary="Send a maintenance notification (ADMIN)")
async def broadcast_maintenance(
    body: MaintenanceBroadcast, request: Request, admin: AdminUser, client: Redis
) -> dict[str, Any]:
    event = maintenance_notification(
        body.message, starts_at=body.startsAt, duration_minutes=body.durationMinutes
    )
    data = await _broadcast(request, client, event, admin)
    return {"message": "Maintenance notification sent", "data": data}


@router.post(
    "/broadcast/channel/{name}",
    summary="Send a channel_message to the subscribers of a channel (ADMIN)",
)
async def broadcast_channel(
    admin: AdminUser, channel: Channel, body: ChannelBroadcast, request: Request, client: Redis
) -> dict[str, Any]:
    event = channel_message(channel, body.message, body.level, body.data)
    data = await _broadcast(request, client, event, admin)
    return {"message": "Channel message sent", "data": {**data, "channel": channel}}
