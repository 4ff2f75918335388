"""Authorization on every route and message that names a job or a user (IDOR), beyond
``delivery/test_subscriptions.py`` (subscribe, read, events, cancel of a finished job) and
``delivery/test_client_errors.py`` (``ops`` for a plain user): another user's status, admin-only
routes for every non-admin role spelling, cancelling another user's *running* job, user
ids that only look alike, and the ``ops`` channel for role look-alikes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from tests.support.helpers import Tokens, bearer, get_job, is_snapshot, start_job, wait_job_status
from tests.support.hostile_helpers import instance_leases

pytestmark = pytest.mark.integration

#: Roles that must not make an admin (the contract: ``ADMIN`` or ``ROLE_ADMIN``, exactly).
NOT_ADMIN_ROLES: list[Any] = [
    ["admin"],
    ["ROLE_USER"],
    ["ADMINISTRATOR"],
    ["ROLE_ADMIN_READONLY"],
    [" ADMIN"],
    "USER",
    [],
]

ADMIN_ROUTES = [
    ("GET", "/api/v1/websocket/stats", None),
    ("POST", "/api/v1/websocket/broadcast/system", {"message": "pwned", "level": "critical"}),
    ("POST", "/api/v1/websocket/broadcast/maintenance", {"message": "pwned"}),
]


async def call(http: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return await http.request(method, path, json=body, headers=headers)


async def test_admin_routes_refuse_every_non_admin(
    http: Any, tokens: Tokens, native_client: Any
) -> None:
    listener = await native_client(tokens.alice)
    for roles in NOT_ADMIN_ROLES:
        token = tokens.make(f"role-{roles!s}", roles=roles)
        for method, path, body in ADMIN_ROUTES:
            response = await call(http, method, path, body, bearer(token))
            assert response.status_code == 403, (roles, path, response.text)
            assert response.json()["code"] == "forbidden", (roles, path)
    for method, path, body in ADMIN_ROUTES:
        anonymous = await call(http, method, path, body, {})
        assert anonymous.status_code == 401, (path, anonymous.text)
        assert anonymous.json()["code"] == "auth_required"

    # ROLE_ADMIN is an admin too; its broadcast is the only one that reaches anybody.
    role_admin = tokens.make("role-admin", roles=["ROLE_ADMIN"])
    stats = await http.get("/api/v1/websocket/stats", headers=bearer(role_admin))
    assert stats.status_code == 200, stats.text
    sent = await http.post(
        "/api/v1/websocket/broadcast/system",
        json={"message": "from a real admin"},
        headers=bearer(role_admin),
    )
    assert sent.status_code == 200, sent.text
    await listener.wait_for_type("system_notification", message="from a real admin")
    await listener.settle()
    got = [m["message"] for m in listener.messages if "notification" in m["type"]]
    assert got == ["from a real admin"], got


async def test_user_status_only_for_that_user_or_an_admin(
    http: Any, tokens: Tokens, native_client: Any, redis_client: Any
) -> None:
    await instance_leases(redis_client, 1)
    await native_client(tokens.alice)  # alice (sub 1) is online
    own = await http.get("/api/v1/websocket/user/1/status", headers=bearer(tokens.alice))
    assert own.status_code == 200, own.text
    assert own.json()["data"] == {"userId": 1, "connected": True, "connections": 1}

    lookalikes = [tokens.bob, tokens.make("01"), tokens.make(" 1"), tokens.make("1.0")]
    lookalikes += [tokens.make("x", roles=roles) for roles in NOT_ADMIN_ROLES]
    for token in lookalikes:
        response = await http.get("/api/v1/websocket/user/1/status", headers=bearer(token))
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "forbidden"
    for other in ("01", "bob-2", "admin-9", "1%20"):
        response = await http.get(
            f"/api/v1/websocket/user/{other}/status", headers=bearer(tokens.alice)
        )
        assert response.status_code == 403, (other, response.text)
    anonymous = await http.get("/api/v1/websocket/user/1/status")
    assert anonymous.status_code == 401

    admin = await http.get("/api/v1/websocket/user/1/status", headers=bearer(tokens.admin))
    assert admin.status_code == 200 and admin.json()["data"]["connected"] is True
    offline = await http.get("/api/v1/websocket/user/bob-2/status", headers=bearer(tokens.admin))
    assert offline.json()["data"] == {"userId": "bob-2", "connected": False, "connections": 0}


async def test_cancelling_another_users_running_job_is_refused(
    http: Any, tokens: Tokens, native_client: Any
) -> None:
    owner = await native_client(tokens.alice)
    job_id = await start_job(http, tokens.alice, topic="mine", sections=4, secondsPerSection=0.4)
    start = owner.mark()
    await owner.send("subscribe_job", jobId=job_id)
    snapshot = await owner.wait_for(is_snapshot(job_id), after=start, what="the snapshot")
    assert snapshot["type"] == "job_status_update", "the job ended before the test could act"

    for token in (tokens.bob, tokens.make("01"), tokens.make("x", roles=["admin"])):
        for params in ({}, {"terminate": "true"}):
            response = await http.delete(
                f"/api/v1/jobs/{job_id}", params=params, headers=bearer(token)
            )
            assert response.status_code == 403, response.text
            assert response.json()["code"] == "forbidden"

    job = await wait_job_status(
        http, tokens.alice, job_id, ("completed", "cancelled", "failed"), 30
    )
    assert job["status"] == "completed", f"another user's DELETE changed the job: {job}"
    await owner.wait_for_type("job_completed", jobId=job_id)
    statuses = [m.get("data", {}).get("status") for m in owner.for_job(job_id)]
    assert "cancelled" not in statuses, statuses


@pytest.mark.parametrize("sub", ["01", " 1", "1.0", "1 ", "+1"])
async def test_lookalike_user_ids_are_other_users(
    http: Any, any_client: Any, tokens: Tokens, sub: str
) -> None:
    """``sub`` is compared as a string: "01" is not user 1."""
    job_id = await start_job(http, tokens.alice, topic="private", sections=1, secondsPerSection=0)
    token = tokens.make(sub)
    assert (await get_job(http, token, job_id)).status_code == 403
    events = await http.get(f"/api/v1/jobs/{job_id}/events", headers=bearer(token))
    assert events.status_code == 403
    listed = await http.get("/api/v1/jobs", headers=bearer(token))
    assert job_id not in {job["jobId"] for job in listed.json()["data"]["jobs"]}

    client = await any_client(token)
    refused = await client.request("subscribe_job", jobId=job_id)
    assert (refused["type"], refused["code"]) == ("error", "forbidden"), refused
    await client.settle()
    assert client.for_job(job_id) == [], "a look-alike user got the job's events"


async def test_ops_channel_refuses_role_lookalikes(any_client: Any, tokens: Tokens) -> None:
    for roles in NOT_ADMIN_ROLES:
        client = await any_client(tokens.make("ops-probe", roles=roles))
        answer = await client.request("subscribe_channel", channel="ops")
        assert (answer["type"], answer["code"]) == ("error", "forbidden"), (roles, answer)
        assert (await client.ping())["type"] == "pong"
        await client.close()
    admin = await any_client(tokens.make("ops-admin", roles=["ROLE_ADMIN"]))
    assert await admin.request("subscribe_channel", channel="ops") == {
        "type": "subscribed",
        "channel": "ops",
    }


async def test_a_second_connect_cannot_change_the_identity(server: Any, tokens: Tokens) -> None:
    """A Socket.IO session that sends CONNECT again, with an admin's token, stays who it
    was: the second CONNECT is refused and ``ops`` is still forbidden."""
    url = f"{server.ws_url}/ws/job-status/?EIO=4&transport=websocket"
    async with websockets.connect(url) as ws:
        assert str(await ws.recv()).startswith("0")
        await ws.send("40" + json.dumps({"token": tokens.alice}))
        seen = [str(await asyncio.wait_for(ws.recv(), 20)) for _ in range(2)]
        assert seen[0].startswith("40") and '"connection_established"' in seen[1], seen

        await ws.send("40" + json.dumps({"token": tokens.admin}))
        await ws.send('42["subscribe_channel",{"channel":"ops"}]')
        answers: list[str] = []
        while not any('"error"' in a or '"subscribed"' in a for a in answers):
            packet = str(await asyncio.wait_for(ws.recv(), 20))
            if packet == "2":
                await ws.send("3")
            answers.append(packet)
        assert any(a.startswith("44") for a in answers), f"second CONNECT not refused: {answers}"
        assert '"forbidden"' in answers[-1] and '"subscribed"' not in answers[-1], answers
