"""The tests' environment: set in ``os.environ`` when this module is first imported.

``tests/conftest.py`` imports it before anything else, so the settings are in place before
anything reads ``notifier.contract.settings.get_settings()`` (cached on its first call);
importing it after that first call is an error rather than a silently ignored setting.

Every process the tests start gets :func:`child_env`: a copy of this process's environment
with :data:`TEST_ENV` on top, so whatever the run was started with reaches the servers and
workers too (``JOBCAST_FAST_TRANSPORT=false pytest ...``).

Only the pytest process imports this module: the apps its children load
(``tests.support.celery_local_app``, ``tests.support.producer``, ...) must not, or they
would pick a Redis port of their own.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import NoReturn

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


REPO = Path(__file__).resolve().parents[2]
#: 64 bytes: long enough for HS256 and HS512 without PyJWT's InsecureKeyLengthWarning.
JWT_SECRET = "jobcast-test-secret-" + "0123456789abcdef" * 2 + "-sixty-four-bytes-long!!"
assert len(JWT_SECRET.encode()) >= 64
#: ``JOBCAST_TEST_REDIS_URL``: someone else's Redis instead of one of the tests' own.
EXTERNAL_REDIS_URL = os.environ.get("JOBCAST_TEST_REDIS_URL") or None
REDIS_PORT = free_port()
REDIS_URL = EXTERNAL_REDIS_URL or f"redis://127.0.0.1:{REDIS_PORT}/0"

TEST_ENV = {
    "REDIS_URL": REDIS_URL,
    "JOBCAST_JWT_SECRET": JWT_SECRET,
    "JOBCAST_HEARTBEAT_SECONDS": "5",
    # The shared servers see every test's refused tokens, all from 127.0.0.1: the
    # per-address failure limit would refuse later tests. Its own tests set it low.
    "JOBCAST_AUTH_FAILURE_BURST": "1000000",
    "PYTHONUNBUFFERED": "1",
}

#: ``JOBCAST_TEST_REDIS_CLUSTER=1``: the same tests with jobcast's keys on a Redis Cluster of
#: the tests' own (3 masters, 3 replicas, on :data:`CLUSTER_PORTS`); the Redis on
#: :data:`REDIS_PORT` is then Celery's broker and result backend only.
REDIS_CLUSTER = os.environ.get("JOBCAST_TEST_REDIS_CLUSTER", "").lower() in ("1", "true", "yes")
CLUSTER_PORTS: list[int] = []
if REDIS_CLUSTER:
    from api.local_cluster import free_ports

    CLUSTER_PORTS = free_ports(6)
    TEST_ENV.update(
        REDIS_URL=f"redis://127.0.0.1:{CLUSTER_PORTS[0]}/0",
        JOBCAST_REDIS_CLUSTER="true",
        CELERY_BROKER_URL=REDIS_URL,
        CELERY_RESULT_BACKEND=REDIS_URL,
    )

_settings = sys.modules.get("notifier.contract.settings")
if _settings is not None and _settings.get_settings.cache_info().currsize:
    raise RuntimeError(
        "notifier's settings were read before the tests' environment was set: "
        "tests/conftest.py must import tests.support.env before anything else"
    )
os.environ.update(TEST_ENV)


def child_env(**overrides: str) -> dict[str, str]:
    """The environment of the processes the tests start: a copy of this process's, with
    :data:`TEST_ENV` and then ``overrides`` on top."""
    env = dict(os.environ)
    env.update(TEST_ENV)
    env.update(overrides)
    return env


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any jobcast setting (``JOBCAST_*``, ``FLOWER_*``,
    ``REDIS_URL``), plus ``overrides``: for the processes that configure themselves (the
    launcher, ``jobcast token``)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JOBCAST_", "FLOWER_")) and key != "REDIS_URL"
    }
    env.update(PYTHONUNBUFFERED="1", **overrides)
    return env


def missing_tool(reason: str) -> NoReturn:
    """A tool a test needs is missing: skip outside CI; under CI (``CI`` set) fail, since
    nothing CI runs may be skipped (.ci/run installs Chromium, Node.js and promtool)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: this test must run; see .ci/run)")
    pytest.skip(reason)
