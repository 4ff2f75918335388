"""Baseline (a): the naive thing a Python developer would build instead of jobcast.

A bare python-socketio ``AsyncServer`` (ASGI, under uvicorn with its defaults) with
``socketio.AsyncRedisManager`` on the benchmark's Redis, fed by a write-only
``socketio.RedisManager`` (``bench/producer.py`` mode ``naive``). Same auth as jobcast (an
HS256 JWT in Socket.IO ``auth.token``, checked with PyJWT in ``connect``), same rooms
(``user:<sub>`` on connect, ``job:<jobId>`` on ``subscribe_job``, answered with
``subscribed``), same path. No snapshots, ownership checks, replay or backpressure.

    python -m bench.baseline_naive --port 8081 --redis-url redis://127.0.0.1:6379/0 --secret S
"""

from __future__ import annotations

import argparse
from typing import Any

import jwt
import socketio
import uvicorn


def create_app(redis_url: str, secret: str) -> socketio.ASGIApp:
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=socketio.AsyncRedisManager(redis_url),
        cors_allowed_origins="*",
    )

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            claims = jwt.decode(
                token or "",
                secret,
                algorithms=["HS256"],
                options={"require": ["exp"], "verify_sub": False},
            )
        except jwt.ExpiredSignatureError:
            raise socketio.exceptions.ConnectionRefusedError(
                "Token expired", {"code": "token_expired"}
            ) from None
        except jwt.InvalidTokenError:
            raise socketio.exceptions.ConnectionRefusedError(
                "Invalid token", {"code": "invalid_token"}
            ) from None
        await sio.enter_room(sid, f"user:{claims['sub']}")

    @sio.on("subscribe_job")
    async def subscribe_job(sid: str, data: Any = None) -> dict[str, Any]:
        job_id = data.get("jobId") if isinstance(data, dict) else None
        if not isinstance(job_id, str) or not job_id:
            error = {"type": "error", "code": "bad_request", "message": "jobId is required"}
            await sio.emit("error", error, to=sid)
            return error
        await sio.enter_room(sid, f"job:{job_id}")
        answer = {"type": "subscribed", "jobId": job_id}
        await sio.emit("subscribed", answer, to=sid)
        return answer

    async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        ok = scope["path"] == "/healthz"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if ok else 404,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok" if ok else b"not found"})

    return socketio.ASGIApp(sio, other_asgi_app=health, socketio_path="ws/job-status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.redis_url, args.secret),
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="off",
    )


if __name__ == "__main__":
    main()
