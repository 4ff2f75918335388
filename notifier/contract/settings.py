"""Configuration: environment variables with the ``JOBCAST_`` prefix (plus ``REDIS_URL``)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "changethis"}


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JOBCAST_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "JOBCAST_REDIS_URL"),
    )
    #: ``REDIS_URL`` names any node of a Redis Cluster: everything runs on the cluster.
    redis_cluster: bool = False
    #: Sentinels (``host:port``) watching jobcast's Redis: clients ask them for the master
    #: ``redis_sentinel_master`` and follow its failovers (``REDIS_URL`` then gives only the
    #: database and credentials).
    redis_sentinels: Annotated[list[str], NoDecode] = []
    redis_sentinel_master: str | None = None
    #: Partitions of the keyspace (a user's partition is a stable hash of their id). Fixed
    #: per deployment and recorded in Redis; see ``jobcast migrate-partitions``.
    partitions: int = Field(default=64, ge=1, le=4096)
    #: Celery's broker and result backend, under Celery's own names. Unset: ``REDIS_URL``
    #: (a start-up error in cluster mode: kombu has no Redis Cluster transport).
    celery_broker_url: str | None = Field(
        default=None, validation_alias=AliasChoices("CELERY_BROKER_URL")
    )
    celery_result_backend: str | None = Field(
        default=None, validation_alias=AliasChoices("CELERY_RESULT_BACKEND")
    )
    #: ``make run-cluster``: the ports of the local cluster's six nodes (3 masters, then
    #: 3 replicas); unset: free ports.
    cluster_ports: Annotated[list[int], NoDecode] = []
    #: Terminal events wait this long for one replica's acknowledgement (``WAIT 1``); 0
    #: skips the wait. Without replicas the wait is skipped anyway.
    replica_wait_ms: int = Field(default=500, ge=0)

    #: Allocations between young-generation garbage collections in a notifier (0: Python's
    #: default of 700, which costs much CPU with thousands of connections).
    gc_threshold: int = 50_000
    #: Connections in each process's Redis pool (callers wait for a free one).
    redis_max_connections: int = 64

    # --- auth
    jwt_secret: SecretStr | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = ["HS256"]
    jwt_public_key: SecretStr | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: float = 10.0
    #: Tokens longer than this are refused before any decoding.
    jwt_max_length: int = 8192

    # --- HTTP
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    cors_origins: Annotated[list[str], NoDecode] = [
        "http://localhost:3000",
        "http://localhost:5173",
    ]
    #: Where X-Forwarded-For and X-Forwarded-Proto are believed: the load balancers'
    #: addresses or networks (comma-separated; ``*``: any), uvicorn's forwarded_allow_ips.
    #: From anywhere else they are ignored, so logs and per-address limits see the
    #: connection's own address.
    trusted_proxies: str = "127.0.0.1"
    heartbeat_seconds: float = 30.0
    #: jobcast's own WebSocket write path (notifier/transport); false serves through the
    #: libraries' stock path, as does a failed start-up compat check.
    fast_transport: bool = True
    demo: bool = False
    log_level: str = "INFO"
    log_format: str = "text"
    #: Per-module levels, e.g. ``notifier.core.hub=DEBUG,workers=DEBUG``.
    log_levels: str = ""

    # --- limits
    auth_timeout_seconds: float = 10.0
    rate_limit_per_second: float = 20.0
    rate_limit_burst: float = 40.0
    flood_close_seconds: float = 5.0
    #: REST requests per second per user (in each API process), with bursts; then 429.
    rest_rate_limit_per_second: float = 20.0
    rest_rate_limit_burst: float = 40.0
    #: Failed authentications per client address (each process): past the burst, that
    #: address's connections and REST requests are refused ``rate_limited`` until the
    #: bucket refills at this rate.
    auth_failure_rate_per_second: float = 1.0
    auth_failure_burst: float = 30.0
    session_warning_seconds: float = 60.0
    max_message_bytes: int = 4096
    max_job_subscriptions: int = 100
    max_channel_subscriptions: int = 20
    max_connections_per_user: int = 20
    max_frame_bytes: int = 65536
    send_queue_bytes: int = 1024 * 1024

    # --- delivery
    progress_min_interval_ms: int = 50
    retention_seconds: int = 24 * 3600
    inbox_max_events: int = 1000
    stream_max_events: int = 100_000
    read_batch: int = 500
    #: A running job's lease, renewed by its worker; lapsed leases are reported as
    #: worker_lost within job_lease_seconds + reaper_interval_seconds.
    job_lease_seconds: float = 15.0
    reaper_interval_seconds: float = 5.0
    #: Terminal events kept per worker process while Redis is unreachable.
    terminal_buffer_events: int = 1000
    #: A connection's presence lease: a dead instance's connections drop out after it.
    presence_lease_seconds: float = 20.0

    # --- Flower
    flower_port: int = 5555
    flower_basic_auth: SecretStr | None = None
    flower_url: str | None = None

    # --- results
    #: ``job_completed.result`` larger than this (JSON bytes) is replaced by a truncation
    #: marker; the full result stays in Celery's result backend.
    result_max_bytes: int = Field(default=32 * 1024, ge=64)
    #: A job's live output (``workers.progress.stream``) is kept up to this many bytes
    #: (UTF-8); past it, text is dropped (cut at a character boundary) and the job says
    #: ``outputTruncated``.
    output_max_bytes: int = Field(default=1024 * 1024, ge=0)

    @field_validator(
        "jwt_algorithms", "cors_origins", "cluster_ports", "redis_sentinels", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("jwt_algorithms")
    @classmethod
    def _no_none_alg(cls, value: list[str]) -> list[str]:
        if not value or any(alg.lower() == "none" for alg in value):
            raise ValueError("JOBCAST_JWT_ALGORITHMS must list real algorithms; 'none' is refused")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for entry in (item.strip() for item in value.split(",")):
            if entry and entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(
                        f"JOBCAST_TRUSTED_PROXIES: {entry!r} is not an address, a network "
                        "(CIDR) or *"
                    ) from None
        return value

    @model_validator(mode="after")
    def _one_topology(self) -> Settings:
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError("JOBCAST_REDIS_SENTINELS needs JOBCAST_REDIS_SENTINEL_MASTER")
        if self.redis_sentinels and self.redis_cluster:
            raise ValueError("JOBCAST_REDIS_SENTINELS and JOBCAST_REDIS_CLUSTER exclude each other")
        for address in self.redis_sentinels:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"JOBCAST_REDIS_SENTINELS: {address!r} is not host:port")
        return self

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [
            (host, int(port))
            for host, _, port in (address.rpartition(":") for address in self.redis_sentinels)
        ]

    def broker_url(self) -> str:
        """Celery's broker: ``CELERY_BROKER_URL``, else ``REDIS_URL`` (not on a cluster)."""
        return self._celery_url(self.celery_broker_url, "CELERY_BROKER_URL")

    def celery_sentinel_options(self, url: str) -> dict[str, str]:
        """The transport options a ``sentinel://`` broker or result backend needs."""
        if url.startswith("sentinel://") and self.redis_sentinel_master:
            return {"master_name": self.redis_sentinel_master}
        return {}

    def result_backend(self) -> str:
        """Celery's result backend: ``CELERY_RESULT_BACKEND``, else ``REDIS_URL``."""
        return self._celery_url(self.celery_result_backend, "CELERY_RESULT_BACKEND")

    def _celery_url(self, value: str | None, name: str) -> str:
        if value:
            return value
        if self.redis_sentinels:  # kombu's and Celery's own Sentinel URLs
            db = (
                self.redis_url.rsplit("/", 1)[-1]
                if "/" in self.redis_url.split("//", 1)[-1]
                else "0"
            )
            return ";".join(f"sentinel://{address}/{db}" for address in self.redis_sentinels)
        if self.redis_cluster:
            raise RuntimeError(
                f"{name} is required with JOBCAST_REDIS_CLUSTER=true: Celery (kombu) has no "
                "Redis Cluster transport; point it at a standalone Redis, Sentinel or RabbitMQ"
            )
        return self.redis_url

    def verification_key(self) -> str:
        """The key that verifies tokens; fails naming the missing setting."""
        if any(alg.startswith(("RS", "ES", "PS", "Ed")) for alg in self.jwt_algorithms):
            if self.jwt_public_key is None:
                raise RuntimeError("JOBCAST_JWT_PUBLIC_KEY is required for asymmetric algorithms")
            return self.jwt_public_key.get_secret_value()
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
        if secret.lower() in _PLACEHOLDERS:
            raise RuntimeError("JOBCAST_JWT_SECRET is missing or a placeholder; set a real secret")
        return secret


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
