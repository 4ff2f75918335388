"""The 401/403/422 matrix of every REST endpoint (SPEC sections 2 and 3).

For each endpoint: no token → 401 ``auth_required``; a bad token → 401 ``invalid_token``;
an expired one → 401 ``token_expired``; a user on an admin endpoint or on another user's
resource → 403 ``forbidden``; the right caller → 200/202. Errors are
``{"message", "code"}``; a bad body is 422 naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from notifier.contract.events import status_update
from notifier.contract.settings import get_settings
from tests.support.helpers import bearer

pytestmark = pytest.mark.integration


@dataclass
class Case:
    method: str
    path: str
    body: dict[str, Any] | None = None
    #: token name → expected status (tokens: alice owns the jobs, bob is another user)
    expect: dict[str, int] = field(default_factory=dict)


def owned_job(redis_client: Any, job_id: str, owner: str) -> None:
    """A queued job of ``owner``, published as the workers do (no worker runs it)."""
    from notifier.core.bus import publish_sync

    event = status_update(job_id, owner, "queued", progress=0, message="Queued")
    assert publish_sync(redis_client, event, get_settings())


def cases() -> list[Case]:
    admin_only = {"alice": 403, "bob": 403, "admin": 200}
    alices = {"alice": 200, "bob": 403, "admin": 200}
    return [
        Case("GET", "/api/v1/websocket/stats", expect=admin_only),
        Case("GET", "/api/v1/websocket/user/1/status", expect=alices),
        Case("GET", "/api/v1/websocket/user/bob-2/status", expect={"alice": 403, "bob": 200}),
        Case(
            "POST",
            "/api/v1/websocket/broadcast/system",
            {"message": "matrix", "level": "info"},
            expect=admin_only,
        ),
        Case(
            "POST",
            "/api/v1/websocket/broadcast/maintenance",
            {"message": "matrix", "startsAt": 1_900_000_000_000, "durationMinutes": 5},
            expect=admin_only,
        ),
        Case(
            "POST",
            "/api/v1/jobs",
            {"topic": "matrix", "sections": 1, "secondsPerSection": 0},
            expect={"alice": 202, "bob": 202, "admin": 202},
        ),
        Case("GET", "/api/v1/jobs", expect={"alice": 200, "bob": 200, "admin": 200}),
        Case("GET", "/api/v1/jobs/matrix-job", expect=alices),
        Case("GET", "/api/v1/jobs/matrix-job/events", expect=alices),
        Case("GET", "/api/v1/jobs/matrix-job/events?after=0-0", expect=alices),
        Case("DELETE", "/api/v1/jobs/matrix-cancel-1", expect={"bob": 403, "alice": 200}),
        Case("DELETE", "/api/v1/jobs/matrix-cancel-2", expect={"bob": 403, "admin": 200}),
    ]


async def call(
    http: httpx.AsyncClient, case: Case, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await http.request(case.method, case.path, json=case.body, headers=headers or {})


def assert_error(response: httpx.Response, status: int, code: str, what: str) -> None:
    assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
    body = response.json()
    assert body.get("code") == code, f"{what}: {body}"
    assert isinstance(body.get("message"), str) and body["message"], f"{what}: {body}"


async def test_rest_auth_matrix(http: httpx.AsyncClient, redis_client: Any, tokens: Any) -> None:
    for job_id in ("matrix-job", "matrix-cancel-1", "matrix-cancel-2"):
        owned_job(redis_client, job_id, "1")  # alice's (sub 1)
    callers = {"alice": tokens.alice, "bob": tokens.bob, "admin": tokens.admin}
    for case in cases():
        what = f"{case.method} {case.path}"
        assert_error(await call(http, case), 401, "auth_required", f"{what} without a token")
        for bad, code in (
            (tokens.bad_signature(), "invalid_token"),
            ("not.a.jwt", "invalid_token"),
            (tokens.expired(), "token_expired"),
        ):
            response = await call(http, case, bearer(bad))
            assert_error(response, 401, code, f"{what} with a {code} token")
            assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
        # Refusals first: a 403 must not act (cancel) before the allowed call does.
        for name, status in sorted(case.expect.items(), key=lambda kv: kv[1] != 403):
            response = await call(http, case, bearer(callers[name]))
            if status == 403:
                assert_error(response, 403, "forbidden", f"{what} as {name}")
                continue
            assert response.status_code == status, f"{what} as {name}: {response.text}"
            body = response.json()
            assert isinstance(body.get("message"), str) and isinstance(body.get("data"), dict)

    # The token may also come as the ``token`` query parameter.
    response = await http.get("/api/v1/jobs", params={"token": tokens.alice})
    assert response.status_code == 200, response.text
    # A job nobody has: 404 for its owner-or-admin endpoints.
    for method, path in (
        ("GET", "/api/v1/jobs/no-such-job"),
        ("GET", "/api/v1/jobs/no-such-job/events"),
        ("DELETE", "/api/v1/jobs/no-such-job"),
    ):
        response = await http.request(method, path, headers=bearer(tokens.admin))
        assert_error(response, 404, "job_not_found", f"{method} {path}")


@pytest.mark.parametrize(
    ("path", "body", "field_name"),
    [
        ("/api/v1/websocket/broadcast/system", {"message": "x", "level": "loud"}, "level"),
        ("/api/v1/websocket/broadcast/system", {"level": "info"}, "message"),
        ("/api/v1/websocket/broadcast/system", {"message": ""}, "message"),
        ("/api/v1/websocket/broadcast/maintenance", {"durationMinutes": 5}, "message"),
        (
            "/api/v1/websocket/broadcast/maintenance",
            {"message": "x", "durationMinutes": -1},
            "durationMinutes",
        ),
        ("/api/v1/jobs", {"topic": "x", "sections": 0}, "sections"),
        ("/api/v1/jobs", {"sections": 2}, "topic"),
        ("/api/v1/jobs", {"topic": "x", "secondsPerSection": -1}, "secondsPerSection"),
        # JSON types are not guessed: true is not 1, "3" is not 3, 2.5 sections are not 2
        ("/api/v1/jobs", {"topic": "x", "sections": True}, "sections"),
        ("/api/v1/jobs", {"topic": "x", "sections": "3"}, "sections"),
        ("/api/v1/jobs", {"topic": "x", "sections": 2.5}, "sections"),
        ("/api/v1/jobs", {"topic": ["x"]}, "topic"),
        (
            "/api/v1/websocket/broadcast/maintenance",
            {"message": "x", "startsAt": "tomorrow"},
            "startsAt",
        ),
    ],
)
async def test_bad_bodies_are_422_naming_the_field(
    http: httpx.AsyncClient, tokens: Any, path: str, body: dict[str, Any], field_name: str
) -> None:
    response = await http.post(path, json=body, headers=bearer(tokens.admin))
    assert_error(response, 422, "validation_error", f"POST {path} {body}")
    payload = response.json()
    assert field_name in payload["message"], payload
    assert field_name in [e["field"] for e in payload.get("errors", [])], payload


async def test_bad_after_is_422(http: httpx.AsyncClient, redis_client: Any, tokens: Any) -> None:
    owned_job(redis_client, "matrix-after", "1")
    response = await http.get(
        "/api/v1/jobs/matrix-after/events", params={"after": "yesterday"},
        headers=bearer(tokens.alice),
    )  # fmt: skip
    assert_error(response, 422, "validation_error", "after=yesterday")
    assert "after" in response.json()["message"]
