"""Configuration, read once at start from ``STAGEFLOW_*`` environment variables (pydantic-settings).

The defaults need no server: an in-memory broker and a SQLite file. Production sets at least
``STAGEFLOW_BROKER_URL``, ``STAGEFLOW_STORE_URL`` and ``STAGEFLOW_SECRET_KEYS``.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from framework.errors import ConfigurationError

# Used only with the embedded default, so a demo runs with no set-up; refused for RabbitMQ.
DEMO_SECRET_KEY = "stageflow-embedded-demo-key-not-secret"
MIN_KEY_BYTES = 32  # 256 bits: an HMAC key or an API key nobody guesses
_MAKE_ONE = "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"


def tracing_enabled() -> bool:
    """OpenTelemetry tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (the standard variable; read
    where a process starts, like the settings). ``framework.tracing`` needs the extra ``stageflow[otel]``."""
    return os.environ.get("OTEL_TRACES_EXPORTER", "none").strip() not in ("", "none")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAGEFLOW_", extra="ignore")

    broker_url: str = Field(
        "memory://",
        description="amqp://user:pass@host:5672/vhost, or the nodes of one cluster comma-separated, or memory://",
    )
    # None: a replica on each node listed in broker_url (when it lists several). 0: RabbitMQ's own default.
    quorum_group_size: int | None = Field(
        None, ge=0, le=99, description="replicas of each quorum queue Stageflow declares (x-quorum-initial-group-size)"
    )
    store_url: str = Field(
        "sqlite:///stageflow.db", description="postgresql://user@host/db, or sqlite:///path (sqlite:///:memory:)"
    )
    store_schema: str = Field("stageflow", description="PostgreSQL schema holding Stageflow's tables")
    store_pool_size: int = Field(10, ge=1, le=1000, description="PostgreSQL connections per process, at most")
    secret_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="taskId signing keys, comma-separated, newest first"
    )
    queue_prefix: str = Field("stageflow", description="prefix of every RabbitMQ queue name")
    # No default: the library does not know its users' cases (nor runs its own examples unasked).
    cases: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="modules (or module:Class) whose BusinessCase subclasses a worker runs, comma-separated",
    )
    # 128, not 64: more transitions in flight make larger store batches (make bench, alternating runs: 1,810 /
    # 1,866 hops/s at 64, 2,196 / 2,089 at 128, 2,002 / 1,948 at 256).
    prefetch: int = Field(128, ge=1, le=10_000, description="unacked messages per worker and queue")
    delivery_limit: int = Field(20, ge=2, description="deliveries before RabbitMQ parks a message")
    # The relay is the safety net for an outbox whose publish may have been lost with no message left to
    # redeliver (a crash right after start(), a broker that refused the publish). A crash mid-transition
    # is recovered at once by the redelivered message. The relay cannot tell a lost message from one
    # still queued, so a short grace would re-publish work that is merely waiting behind a backlog.
    relay_grace_s: float = Field(120.0, gt=0, description="age at which an outbox is re-published, in case it was lost")
    timer_interval_s: float = Field(1.0, gt=0, description="how often each worker looks for due timers and outboxes")
    trace_link_after_s: float = Field(60.0, ge=0, description="tracing: a timer or retry fired later than this after"
                                      " its transition starts a new trace linked to it, not a child span")
    poison_after: int = Field(
        3, ge=1, description="crashes of a redelivered message, run on its own, after which it is parked as poison"
    )
    process_ttl_s: float = Field(7 * 24 * 3600.0, gt=0, description="finished processes are deleted after this")
    max_message_bytes: int = Field(256 * 1024, ge=1024)
    api_keys_read: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="gateway API keys that may read (X-API-Key), comma-separated"
    )
    api_keys_operate: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="gateway API keys that may also start processes and act on them"
    )
    gateway_insecure: bool = Field(False, description="let the gateway run with no API keys (local use only)")
    gateway_max_body_bytes: int = Field(1024 * 1024, ge=1024, description="largest request body the gateway reads")
    http_adapter: bool = Field(True, description="workers also serve the built-in `http` service (API calls)")
    http_concurrency: int = Field(32, ge=1, le=1000, description="HTTP requests in flight per worker, at most")
    http_timeout_s: float = Field(30.0, gt=0, description="default timeout of one HTTP request")
    http_max_body_bytes: int = Field(
        100_000, ge=1024, description="larger HTTP response bodies are an error (a reply must fit in a message)"
    )
    http_allow_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="addresses or CIDR networks the http adapter may reach although loopback or "
        "link-local (refused otherwise), comma-separated"
    )
    http_hosts_by_secret: dict[str, list[str]] = Field(
        default_factory=dict, description='JSON object: secret name -> the hosts it may be sent to ("*.example.com")'
    )
    blueprints: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="blueprint files (JSON or YAML) or globs, comma-separated"
    )
    blueprint_functions: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="modules whose FUNCTIONS dict adds functions to blueprint expressions"
    )
    workflow_refresh_s: float = Field(
        2.0, ge=0, le=3600,
        description="how often workers and gateways read stored workflows for new versions (0 = at start only)",
    )
    blueprint_templates: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="folders of workflow templates beside the shipped ones, comma-separated"
    )
    blueprint_apis: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="files or globs of API definitions shared by every blueprint, comma-separated"
    )
    blueprint_constants: dict[str, Any] = Field(
        default_factory=dict, description="JSON object overriding blueprints' declared constants (e.g. base URLs)"
    )
    gateway_stats_fresh_s: float = Field(
        5.0, ge=0, description="the gateway re-counts processes for /stats and /metrics at most this often"
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="workers' event loop: auto = uvloop if installed (pip install 'stageflow[fast]')"
    )
    stats_stuck_after_s: float = Field(
        60.0, gt=0, description="statistics count a waiting process as stuck once its due time is this far past"
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="workers and services serve /metrics, /healthz, /readyz here (0 = off)"
    )
    metrics_host: str = Field("0.0.0.0", description="address the metrics port listens on")
    release: str | None = Field(
        None, description="this deployment's label in the worker registry (default: a hash of its (case, version) set)"
    )
    heartbeat_s: float = Field(
        5.0, gt=0, le=300, description="how often a worker refreshes its row in the worker registry (gone after 3)"
    )
    test_pause_after_commit: str | None = Field(
        None, description="tests only: built-in services note each committed command in this file, then hang"
    )
    log_level: str = Field("INFO")
    log_json: bool = Field(False, description="JSON log lines instead of console lines")

    @field_validator(
        "secret_keys", "cases", "api_keys_read", "api_keys_operate", "blueprints", "blueprint_functions",
        "blueprint_templates", "blueprint_apis", "http_allow_networks", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def embedded(self) -> bool:
        return self.broker_url.startswith("memory:")

    @model_validator(mode="after")
    def _poison_before_delivery_limit(self) -> Settings:
        if self.poison_after * 2 >= self.delivery_limit:
            raise ValueError(
                f"STAGEFLOW_POISON_AFTER ({self.poison_after}) must be under half of STAGEFLOW_DELIVERY_LIMIT "
                f"({self.delivery_limit}), so Stageflow marks the process failed before RabbitMQ dead-letters the "
                "message on its own"
            )
        return self

    def signing_keys(self) -> list[str]:
        """The signing keys, newest first; ``ConfigurationError`` for a weak one (or none, see the caller)."""
        if self.secret_keys:
            return strong_keys(self.secret_keys, "STAGEFLOW_SECRET_KEYS", allow_demo=self.embedded)
        return [DEMO_SECRET_KEY] if self.embedded else []


def strong_keys(keys: list[str], variable: str, *, allow_demo: bool = False) -> list[str]:
    """``keys``, or ``ConfigurationError`` if one is shorter than 32 bytes or is the published demo key."""
    for n, key in enumerate(keys, 1):
        if key == DEMO_SECRET_KEY and not allow_demo:
            raise ConfigurationError(f"{variable}: key {n} is the published demo key, which anyone can read",
                                     hint=_MAKE_ONE)
        if len(key.encode()) < MIN_KEY_BYTES:
            raise ConfigurationError(f"{variable}: key {n} is shorter than {MIN_KEY_BYTES} bytes", hint=_MAKE_ONE)
    return keys
