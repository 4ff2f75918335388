"""Failed authentications are limited per client address, on every door, and the address
is the real client's: the forwarded one only from ``JOBCAST_TRUSTED_PROXIES``.

A notifier of the test's own with ``JOBCAST_AUTH_FAILURE_BURST=3`` (and a refill too slow
to matter within the test). The tests' connections come from 127.0.0.1, which it trusts
(the default), so ``X-Forwarded-For`` names the client here, as a load balancer's would:
three bad tokens from 198.51.100.1 — over REST, Socket.IO and the native endpoint — and
that address is refused ``rate_limited`` everywhere, even with a good token, while
198.51.100.2 is served. With ``JOBCAST_TRUSTED_PROXIES`` naming another address, the same
header is ignored: the limit falls on 127.0.0.1 itself. (A client on an untrusted address
forging the header through HAProxy: tests/integration/scaling.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.env import child_env
from tests.support.helpers import Tokens, bearer, connect_native, refused_sio
from tests.support.processes import Server, running_server

pytestmark = pytest.mark.integration

LIMITS = {"JOBCAST_AUTH_FAILURE_BURST": "3", "JOBCAST_AUTH_FAILURE_RATE_PER_SECOND": "0.001"}
GUESSER, NEIGHBOUR = "198.51.100.1", "198.51.100.2"


def forwarded(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path / "server.log", child_env(**LIMITS)) as server:
        yield server


async def test_an_address_past_its_failures_is_refused_on_every_door(
    limited: Server, tokens: Tokens
) -> None:
    async with httpx.AsyncClient(base_url=limited.url, timeout=15) as http:
        # Three failures from the guesser, one through each door.
        answer = await http.get(
            "/api/v1/jobs", headers={**bearer("not-a-jwt"), **forwarded(GUESSER)}
        )
        assert answer.status_code == 401 and answer.json()["code"] == "invalid_token"
        refused = await refused_sio(
            limited.url, tokens.bad_signature(), ["websocket"], forwarded(GUESSER)
        )
        assert refused["data"] == {"code": "invalid_token"}
        native = await connect_native(
            limited.native_url, tokens.expired(), headers=forwarded(GUESSER)
        )
        assert (await native.wait_closed())[0] == 4401

        # Now every door refuses that address, whatever token it brings.
        answer = await http.get(
            "/api/v1/jobs", headers={**bearer(tokens.alice), **forwarded(GUESSER)}
        )
        assert answer.status_code == 429, answer.text
        assert answer.json()["code"] == "rate_limited"
        assert int(answer.headers["Retry-After"]) >= 1
        for transport in ("websocket", "polling"):
            refused = await refused_sio(limited.url, tokens.alice, [transport], forwarded(GUESSER))
            assert refused["data"] == {"code": "rate_limited"}, refused
        native = await connect_native(limited.native_url, tokens.alice, headers=forwarded(GUESSER))
        code, reason = await native.wait_closed()
        assert code == 4429 and (reason or "").startswith("rate_limited:"), (code, reason)

        # Another address is not affected.
        answer = await http.get(
            "/api/v1/jobs", headers={**bearer(tokens.alice), **forwarded(NEIGHBOUR)}
        )
        assert answer.status_code == 200, answer.text
        welcome = await connect_native(limited.native_url, tokens.bob, headers=forwarded(NEIGHBOUR))
        try:
            assert (await welcome.wait_for_type("connection_established"))["type"]
        finally:
            await welcome.close()

    log = limited.log_text()
    assert f"client={GUESSER}" in log or f'"client": "{GUESSER}"' in log, log[-2000:]
    assert "client=127.0.0.1" not in log and '"client": "127.0.0.1"' not in log


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    tmp_path: Path, tokens: Tokens
) -> None:
    env = child_env(**LIMITS, JOBCAST_TRUSTED_PROXIES="10.0.0.1")
    with running_server(tmp_path / "server.log", env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
            for n in range(3):  # each "from" another address: all are 127.0.0.1's failures
                answer = await http.get(
                    "/api/v1/jobs", headers={**bearer("bad"), **forwarded(f"203.0.113.{n}")}
                )
                assert answer.status_code == 401, answer.text
            answer = await http.get(
                "/api/v1/jobs", headers={**bearer(tokens.alice), **forwarded("203.0.113.99")}
            )
            assert answer.status_code == 429, answer.text
