"""The limits server: one dedicated ``python -m api`` for every test of this package, with
limits small enough to reach (2 connections per user, 1 channel subscription, a 2 s
authentication timeout, a 64 KiB send queue: ``tests.support.limits_helpers``); message
size and rate limits keep their defaults. It runs on the session's Redis, beside the
session's server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.hostile_helpers import dedicated_server
from tests.support.limits_helpers import LIMITS_ENV
from tests.support.processes import Server


@pytest.fixture(scope="package")
def limits_server(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with dedicated_server(tmp_path_factory.mktemp("limits"), "limits", **LIMITS_ENV) as handle:
        yield handle
