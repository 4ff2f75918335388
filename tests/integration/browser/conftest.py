"""The browser tests' Chromium and demo server, one of each per test module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser_helpers import (
    Browser,
    DemoServer,
    require_browser_tools,
    running_demo_server,
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    node, chromium = require_browser_tools()
    driver = Browser(node, chromium, tmp_path_factory.mktemp("browser") / "driver.log")
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture(scope="module")
def demo_server(
    redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoServer]:
    with running_demo_server(tmp_path_factory.mktemp("demo-server")) as server:
        yield server
