"""The transport path a server process takes, as its operator sees it: the start-up line,
``/metrics``, and real clients served on either path (SPEC section 10, Transport)."""

from __future__ import annotations

import asyncio
import importlib.metadata
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.env import child_env
from tests.support.fault_helpers import ServerProc, servers
from tests.support.helpers import bearer, connect_sio, is_type

pytestmark = pytest.mark.integration


def transport_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "transport=" in line]


async def broadcast_reaches_both_transports(url: str, tokens: Any, text: str) -> None:
    clients = [
        await connect_sio(url, tokens.make(f"paths-{name}"), transports)
        for name, transports in (("ws", ["websocket"]), ("poll", ["polling"]))
    ]
    try:
        for client in clients:
            await client.wait_for(is_type("connection_established"))
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            answer = await http.post(
                "/api/v1/websocket/broadcast/system",
                json={"message": text, "level": "info"},
                headers=bearer(tokens.admin),
            )
            assert answer.status_code == 200, answer.text
        for client in clients:
            message = await client.wait_for(is_type("system_notification", message=text))
            assert message["eventId"]
            assert (await client.call("ping"))["type"] == "pong"
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def metrics_path(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    (line,) = [line for line in text.splitlines() if line.startswith("jobcast_transport_info")]
    return line.split('path="')[1].split('"')[0]


async def test_a_missing_library_name_means_one_warning_and_a_working_stock_path(
    tmp_path: Path, tokens: Any, redis_server: Any
) -> None:
    server = ServerProc(
        tmp_path,
        module="tests.support.degraded_server",
        env=child_env(JOBCAST_FAST_TRANSPORT="true"),
        name="degraded",
    )
    with servers(server):
        log = server.log_text()
        warnings = [line for line in log.splitlines() if "WARNING" in line]
        assert len(warnings) == 1, warnings
        version = importlib.metadata.version("uvicorn")
        assert f"uvicorn {version}" in warnings[0] and "ClientDisconnected" in warnings[0]
        (started,) = transport_lines(log)
        assert "transport=stock" in started
        assert await metrics_path(server.url) == "stock"
        await broadcast_reaches_both_transports(server.url, tokens, "served the stock way")


@pytest.mark.parametrize(("setting", "path"), [("true", "fast"), ("false", "stock")])
async def test_the_setting_chooses_the_path(
    tmp_path: Path, tokens: Any, redis_server: Any, setting: str, path: str
) -> None:
    server = ServerProc(tmp_path, env=child_env(JOBCAST_FAST_TRANSPORT=setting), name=path)
    with servers(server):
        log = server.log_text()
        (started,) = transport_lines(log)
        assert f"transport={path}" in started
        assert not [line for line in log.splitlines() if "WARNING" in line]
        assert await metrics_path(server.url) == path
        await broadcast_reaches_both_transports(server.url, tokens, f"served the {path} way")
